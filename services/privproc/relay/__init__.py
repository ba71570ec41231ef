"""The OHTTP relay: forwards ciphertext, strips every client identifier."""
