"""Thin adapters shared by every service: gRPC and HTTP servers, error mapping, lifecycle."""
