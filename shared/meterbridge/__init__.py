"""meterbridge: usage-based billing infrastructure, the shared Lambda layer package."""

__version__ = "0.1.0"
