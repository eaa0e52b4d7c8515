"""Fixtures of the real-server tests; the harness and how to use it: ``harness.py``."""

from harness import start_site  # noqa: F401  (the fixture)
