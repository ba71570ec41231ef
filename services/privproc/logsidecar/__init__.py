"""The allow-listed log sidecar of the CVM: only declared events, within their bounds, leave it."""
