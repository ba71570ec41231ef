"""The transparency ledger: a C2SP tiled log of releases and keys, and its witness."""
