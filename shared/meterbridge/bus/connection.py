"""The NATS connection options every meterbridge client uses (Lambda publisher, ECS bridge).

Deployed (template.yaml), NATS always asks for a user and password (the password from SSM),
and an external cluster is reached over TLS only. Locally both are off: an empty
``NATS_USER`` sends no credentials, and ``NATS_TLS=false`` with ``nats://`` URLs stays plain.
"""

from __future__ import annotations

import ssl
from typing import Any

from meterbridge.settings import Settings


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` beyond servers and timeouts: credentials, TLS."""
    options: dict[str, Any] = {}
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    if settings.nats_tls or any(s.startswith("tls://") for s in settings.nats_servers):
        # Verifies the server's certificate and host name: the system roots, or a private CA.
        options["tls"] = ssl.create_default_context(cafile=settings.nats_tls_ca_file or None)
    return options
