"""Generated protobuf and gRPC code for privproc.v1 (``make protos``; do not edit)."""
