"""OpenMeter's ingest API over httpx: one batch per call, retried, behind a circuit breaker.

``POST {OPENMETER_BASE_URL}/api/v1/events`` with exactly ``application/cloudevents-batch+json``
and ``Authorization: Bearer <OPENMETER_API_KEY>``. The body is assembled from the CloudEvent
JSON strings the outbox already stores, so nothing is parsed or re-serialised on the hot path.

Outcomes of ``send_batch``:
- returns ``attempts`` (>= 1) when OpenMeter answered 2xx;
- ``OpenMeterRejected`` on 400/413/422: the batch holds an event OpenMeter will never accept
  (the flush bisects to find it); never retried here;
- ``OpenMeterMisconfigured`` on other 4xx (bad key, wrong URL): retrying or dead-lettering
  would be wrong, the operator must fix the configuration;
- ``OpenMeterUnavailable`` when 5xx/429/timeouts outlast the retries or the caller's deadline,
  or the circuit is open. Whether OpenMeter stored the batch is then unknown: the caller must
  not mark it sent, and a later re-send is harmless (OpenMeter dedupes on ``(source, id)``).

Retries: exponential backoff with full jitter (``uniform(0, min(cap, base * 2**n))``);
``Retry-After`` (seconds or an HTTP date) is a floor on 429 and 503. No wait ever runs past the
caller's deadline: the client gives up first, so a Lambda never dies mid-sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from meterbridge.errors import MeterbridgeError, UpstreamUnavailable
from meterbridge.observability import logger
from meterbridge.resilience import CircuitBreaker
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings, get_settings

INGEST_PATH = "/api/v1/events"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REJECTED_STATUSES = frozenset({400, 413, 422})
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})


class OpenMeterRejected(MeterbridgeError):
    """OpenMeter refused the batch as invalid (400/413/422); ``details`` holds its answer."""

    status, code = 502, "openmeter_rejected"

    def __init__(self, message: str, *, http_status: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.http_status = http_status


class OpenMeterMisconfigured(MeterbridgeError):
    """401/403/404/405/415: the URL, key or contract is wrong; no retry helps."""

    status, code = 502, "openmeter_misconfigured"


class OpenMeterUnavailable(UpstreamUnavailable):
    """Retries exhausted, deadline reached or circuit open; the batch's fate is unknown."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0


if TYPE_CHECKING:  # pragma: no cover
    import httpx
else:  # the admin API imports this module for dead letters and never sends
    httpx = LazyLoader("httpx", globals(), "httpx")


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def batch_body(events: Sequence[str]) -> bytes:
    """A JSON array from already-serialised CloudEvent objects."""
    return ("[" + ",".join(events) + "]").encode()


class OpenMeterClient:
    """A thread-safe client (httpx connection pool) for one OpenMeter endpoint."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        max_connections: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(
            "openmeter", failure_threshold=5, reset_timeout_s=30.0
        )
        self._sleep = sleep
        self._jitter = jitter
        headers = {"Content-Type": BATCH_CONTENT_TYPE, "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _backoff_s(self, attempt: int) -> float:
        ceiling = min(self.retry.backoff_cap_s, self.retry.backoff_base_s * (2 ** (attempt - 1)))
        return self._jitter(0.0, ceiling)

    def send_batch(self, events: Sequence[str], *, deadline: float | None = None) -> int:
        """POST ``events`` (CloudEvent JSON strings) as one batch; return the attempts used.

        ``deadline`` is a ``time.monotonic()`` instant no attempt or wait may run past.
        """
        body = batch_body(events)
        attempt = 0
        last = "no attempt made"
        while attempt < self.retry.max_attempts:
            attempt += 1
            if deadline is not None and time.monotonic() + min(self.timeout_s, 1.0) > deadline:
                raise OpenMeterUnavailable(
                    f"OpenMeter: deadline reached after {attempt - 1} attempts ({last})",
                    attempts=attempt - 1,
                )
            if not self.breaker.allow():
                raise OpenMeterUnavailable(
                    "OpenMeter: circuit open, not sending", attempts=attempt - 1
                )
            timeout = self.timeout_s
            if deadline is not None:
                timeout = max(0.05, min(timeout, deadline - time.monotonic()))
            wait: float | None = None
            try:
                response = self._http.post(INGEST_PATH, content=body, timeout=timeout)
            except httpx.TransportError as exc:
                self.breaker.record_failure()
                last = type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.breaker.record_success()
                    return attempt
                if status in REJECTED_STATUSES:
                    # OpenMeter is healthy: it read the batch and refused its content.
                    self.breaker.record_success()
                    raise OpenMeterRejected(
                        f"OpenMeter rejected the batch ({status})",
                        http_status=status,
                        details=_problem(response),
                    )
                if status not in RETRYABLE_STATUSES:
                    self.breaker.record_success()
                    raise OpenMeterMisconfigured(
                        f"OpenMeter answered {status}; check OPENMETER_BASE_URL and the API key"
                    )
                if status == 429:
                    # Throttling is not an outage: honour it without opening the circuit.
                    self.breaker.record_success()
                else:
                    self.breaker.record_failure()
                last = f"HTTP {status}"
                if status in RETRY_AFTER_STATUSES:
                    wait = _retry_after_s(response)
            if attempt >= self.retry.max_attempts:
                break
            delay = self._backoff_s(attempt)
            if wait is not None:
                delay = max(delay, wait)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise OpenMeterUnavailable(
                    f"OpenMeter: a retry in {delay:.1f}s would pass the deadline ({last})",
                    attempts=attempt,
                )
            logger.debug(
                "openmeter retry",
                extra={"attempt": attempt, "delay_s": round(delay, 3), "cause": last},
            )
            self._sleep(delay)
        raise OpenMeterUnavailable(
            f"OpenMeter: {attempt} attempts failed ({last})", attempts=attempt
        )


def _problem(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


_client: OpenMeterClient | None = None
_client_key: tuple[str, str, float] | None = None
_lock = threading.Lock()


def get_client(settings: Settings | None = None) -> OpenMeterClient:
    """The process-wide client, kept across warm invocations so its circuit state survives."""
    global _client, _client_key
    settings = settings or get_settings()
    key = (settings.openmeter_base_url, settings.openmeter_api_key, settings.openmeter_timeout_s)
    with _lock:
        if _client is None or _client_key != key:
            if _client is not None:
                _client.close()
            _client = OpenMeterClient(
                settings.openmeter_base_url,
                settings.openmeter_api_key,
                timeout_s=settings.openmeter_timeout_s,
            )
            _client_key = key
        return _client


def reset_client() -> None:
    global _client, _client_key
    with _lock:
        if _client is not None:
            _client.close()
        _client, _client_key = None, None
