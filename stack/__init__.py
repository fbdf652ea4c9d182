"""The local stack: embedded Redis, demo media, process supervision, the ``traffic`` command."""
