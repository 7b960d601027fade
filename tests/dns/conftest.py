"""The `resolvers` fixture lives in tests/conftest.py (the lab tests use it too)."""
