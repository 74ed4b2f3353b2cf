"""Clients of external systems (OpenMeter); each behind a port the logic calls."""
