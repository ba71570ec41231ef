"""The predictor CVM: RA-TLS endpoint, model runtime, safety policy."""
