"""privproc: Private Processing over OHTTP, Privacy Pass, RA-TLS and a transparency ledger."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written; an install records it in the metadata.
    __version__ = version("privproc")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
