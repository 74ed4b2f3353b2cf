"""meterbridge-client: record usage events without slowing the caller.

from meterbridge_client import Client
client = Client(api_key="mb_live_...", base_url="https://meterbridge.example.com")
client.record("api.call", {"tokens": 1234}, subject="customer-42")
"""

from meterbridge_client._async import AsyncClient
from meterbridge_client._core import RejectedEvent, Stats
from meterbridge_client._ids import uuid7
from meterbridge_client._sync import Client
from meterbridge_client.middleware import Meter, MeteringMiddleware

__all__ = [
    "AsyncClient",
    "Client",
    "Meter",
    "MeteringMiddleware",
    "RejectedEvent",
    "Stats",
    "uuid7",
]
__version__ = "0.1.0"
