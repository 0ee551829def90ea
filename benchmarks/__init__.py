"""Benchmarks: plain scripts that print figures; docs/benchmarks.md records them."""
