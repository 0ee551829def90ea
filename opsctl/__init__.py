"""opsctl: the operations toolkit for the multi-region IM platform."""

__version__ = "0.1.0"
