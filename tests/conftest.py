"""Fixtures and hooks only; what the tests share is in helpers.py."""
