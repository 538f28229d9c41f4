"""Helpers shared by several test files (fixtures live in tests/conftest.py). A test file
imports its shared helpers from here, never from another test file (tests/test_layout.py)."""
