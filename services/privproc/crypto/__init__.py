"""Cryptographic primitives privproc needs and ``cryptography`` does not expose."""
