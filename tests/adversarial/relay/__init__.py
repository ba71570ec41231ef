"""Attacks from (or on) the relay trust domain; see ``tests/adversarial/__init__.py``."""
