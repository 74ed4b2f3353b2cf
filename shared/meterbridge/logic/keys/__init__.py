"""API keys: ``format`` (generation, parsing, hashing: what authentication needs),
``lifecycle`` (issue, list, revoke, rotate: the admin API's calls) and ``usage`` (``last_used_at``).

``auth`` imports ``format`` only, and ``lifecycle`` calls ``auth.forget``: no import cycle.
"""
