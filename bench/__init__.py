"""Benchmarks of Switchyard (see docs/benchmarks.md). Run them as scripts, e.g. `make bench`."""
