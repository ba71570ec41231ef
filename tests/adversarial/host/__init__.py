"""Attacks from (or on) the host trust domain; see ``tests/adversarial/__init__.py``."""
