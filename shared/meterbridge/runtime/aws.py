"""AWS clients built with botocore alone, from one botocore session per process.

``boto3.client(...)`` is a botocore client too, but ``import boto3`` also loads its resource
layer and s3transfer, and s3transfer loads ``multiprocessing``: about a third of boto3's import,
for machinery no handler uses (docs/performance/cold_start.md). The clients are the same
botocore clients, with the same environment (region, credentials, ``AWS_ENDPOINT_URL``, which
botocore reads itself); only the user agent names botocore instead of boto3.
"""

import threading
from typing import TYPE_CHECKING, Any

from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    import botocore.session as botocore_session
else:
    botocore_session = LazyLoader("botocore_session", globals(), "botocore.session")

_lock = threading.Lock()
_session: Any = None


def session() -> Any:
    """The process's botocore session: clients made after a handler is registered on it
    (``session().register(event, handler)``) inherit it, as with boto3's default session."""
    global _session
    with _lock:
        if _session is None:
            _session = botocore_session.get_session()
        return _session


def client(service: str, **kwargs: Any) -> Any:
    """A new botocore client of ``service`` (``create_client``'s arguments), thread-safe."""
    shared = session()
    with _lock:  # a botocore session is not safe to create clients from concurrently
        return shared.create_client(service, **kwargs)
