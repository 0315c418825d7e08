"""Fuzz suite of the public API (issue 18, item 3): see tests/fuzz/_cases.py."""
