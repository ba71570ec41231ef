"""Attacks from (or on) the gateway trust domain; see ``tests/adversarial/__init__.py``."""
