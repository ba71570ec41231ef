"""Attacks from (or on) the client trust domain; see ``tests/adversarial/__init__.py``."""
