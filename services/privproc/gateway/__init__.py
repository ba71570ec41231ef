"""The OHTTP gateway: decapsulation, key rotation, inner routing."""
