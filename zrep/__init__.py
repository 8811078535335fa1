"""zrep: a replicated, persistent message service."""

__version__ = "0.1.0"
