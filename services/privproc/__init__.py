"""privproc: Private Processing over OHTTP, Privacy Pass, RA-TLS and a transparency ledger."""

__version__ = "0.1.0"
