"""The embedded sandbox fleet: local SkyServe emulation and replica emulators."""
