"""Thin gRPC adapters: proto in, engine call, proto out."""
