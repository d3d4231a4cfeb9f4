"""The Textual dashboard: renders snapshots, never collects."""
