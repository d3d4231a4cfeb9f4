"""Collection core: status mapping, metrics scraping and parsing, derivations, events.

Nothing in this package imports textual or rich (tests/test_import_hygiene.py checks it),
so it runs headless: `wfdash --once --json`, scripts, benchmarks.
"""
