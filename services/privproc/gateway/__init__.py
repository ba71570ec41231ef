"""The OHTTP gateway: decapsulation, key rotation, token redemption, sessions relayed to predictors."""
