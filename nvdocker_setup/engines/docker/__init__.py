"""Docker: daemon.json (position-keeping JSON), ``dockerd --validate``, reload or restart through
the service manager, verified with the Engine API's ``GET /info``."""
