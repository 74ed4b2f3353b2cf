"""The test harness that tests import: fixtures, builders, servers, checks (never a test module)."""
