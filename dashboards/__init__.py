"""Grafana dashboards as code, built with grafana-foundation-sdk (pinned to Grafana 11.6).

Each module builds one dashboard from the stack spec; ``opsctl dashboards build`` writes the
JSON. No dashboard JSON is written by hand.
"""
