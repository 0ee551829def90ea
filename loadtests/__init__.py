"""Locust scenarios that speak the IM gateway protocol (docs/protocol.md)."""
