"""Fixtures for the shared modules' tests come from tests/conftest.py."""
