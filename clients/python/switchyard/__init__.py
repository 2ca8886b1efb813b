"""Switchyard Python client."""
