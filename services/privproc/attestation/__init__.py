"""Attestation: SEV-SNP evidence, where it comes from, how it is appraised."""
