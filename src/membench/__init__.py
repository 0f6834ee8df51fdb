"""membench: record memcached traffic as an anonymized profile, analyze it, replay it."""

__version__ = "0.1.0"
