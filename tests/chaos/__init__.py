"""Chaos suite: faults injected under load, each test ending with a client-side ledger check."""
