"""Attacks from (or on) the cdn_ledger trust domain; see ``tests/adversarial/__init__.py``."""
