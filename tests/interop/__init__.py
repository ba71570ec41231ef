"""Interoperability tests: standard OHTTP clients against privproc."""
