"""NATS subject layout: one stream, a subject per tenant and kind.

``meterbridge.tenant.<tenant_id>.<kind>`` where kind is usage, billing or tenant. A stream
consumer filters ``meterbridge.tenant.<tenant_id>.>`` to see one tenant only.
"""

from __future__ import annotations

import re

STREAM_NAME = "METERBRIDGE"
SUBJECT_ROOT = "meterbridge.tenant"
STREAM_SUBJECTS = [f"{SUBJECT_ROOT}.>"]
# At least 2 minutes (issue 7); 5 covers a flush republish of a message ingest just sent.
DUPLICATE_WINDOW_S = 300
# Retention of the live stream; OpenMeter, not NATS, is the system of record.
MAX_AGE_S = 24 * 3600

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def nats_msg_id(source: str, event_id: str) -> str:
    """An event's ``Nats-Msg-Id``, and its outbox key: ``<source>#<id>``, unique across tenants
    because the source names the tenant (ids are tenant-chosen). Ingest maps JetStream's
    acknowledgements back to outbox records by it, so the two must stay one string."""
    return f"{source}#{event_id}"


def tenant_subject(tenant_id: str, kind: str) -> str:
    if not _TOKEN.match(tenant_id) or not _TOKEN.match(kind):
        raise ValueError("subject tokens must be [A-Za-z0-9_-]+")
    return f"{SUBJECT_ROOT}.{tenant_id}.{kind}"


def tenant_filter(tenant_id: str) -> str:
    if not _TOKEN.match(tenant_id):
        raise ValueError("subject tokens must be [A-Za-z0-9_-]+")
    return f"{SUBJECT_ROOT}.{tenant_id}.>"


def tenant_of(subject: str) -> str | None:
    parts = subject.split(".")
    if len(parts) >= 4 and ".".join(parts[:2]) == SUBJECT_ROOT:
        return parts[2]
    return None
