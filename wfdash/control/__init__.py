"""Control actions: validate → plan → execute through a ControlPlane → audit.

Nothing here imports textual or rich (``tests/test_import_hygiene.py``), and ``sky`` is
imported only inside :mod:`wfdash.control.skypilot_plane`'s worker-thread calls.
"""
