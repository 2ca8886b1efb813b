"""Durable state: typed records, the interfaces the engine uses, and their Redis implementation."""
