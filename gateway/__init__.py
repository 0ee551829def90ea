"""Reference IM gateway, dispatcher/persister and migrations (see docs/protocol.md).

Self-contained on purpose: the container image ships only this package, so nothing here
imports from opsctl.
"""

__version__ = "0.1.0"
