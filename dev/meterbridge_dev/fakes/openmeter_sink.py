"""An OpenMeter-compatible ingest server for local runs and tests, with fault injection.

It speaks OpenMeter's ingest contract (``api/openapi.yaml`` and ``openmeter/ingest/httpdriver``
of openmeterio/openmeter): ``POST /api/v1/events`` with a ``Content-Type`` matched exactly, as
OpenMeter's Go handler does: ``application/cloudevents+json`` (one event),
``application/cloudevents-batch+json`` (an array) or ``application/json`` (either);
``Authorization: Bearer <key>`` when a key is configured; ``204 No Content`` on success;
``400`` with an ``application/problem+json`` body on a bad event (the whole batch is rejected and
nothing of it is stored) and, like OpenMeter, on any other content type (its spec lists no
415); ``401`` on a bad key. The body is parsed as strictly as Go's ``encoding/json``: UTF-8 only,
no ``NaN``/``Infinity``, no number past the float64 range (Python's ``json`` takes all three).
Each event needs ``specversion`` ``"1.0"``, ``id``, ``source``, ``type`` and ``subject``;
``time`` is RFC 3339, ``datacontenttype`` ``application/json``, ``dataschema`` a URI and
``data`` an object (each may be null).

Every accepted CloudEvent is recorded in arrival order, and counted per ``(source, id)``:
OpenMeter deduplicates on that pair, so tests assert "each exactly once" on the set of pairs
and can still see re-sends (a count above one).

Faults, steerable from Python (``SinkState``) and over HTTP (``POST /_control/faults``) so a
separate process can be driven by a chaos test. A fault is consumed only by a request that
would otherwise be accepted (authorised, right media type, valid, no poison); scripted faults
come first, in order; otherwise one draw of a seeded ``random.Random`` picks by probability.

=====================  ======================================================================
kind                   answer
=====================  ======================================================================
``ok``                 record, 204
``error``              500, nothing recorded
``throttle``           429 with ``Retry-After: <retry_after>``, nothing recorded
``unavailable``        503 with ``Retry-After: <retry_after>``, nothing recorded
``hang``               ``await asyncio.sleep(seconds)`` (other requests are served meanwhile),
                       then ``then``: ``"ok"`` (record, 204: stored although the client may
                       have timed out) or ``"error"`` (500, nothing recorded)
``record_then_fail``   record, then 500 (OpenMeter stored the batch but the ack was lost)
=====================  ======================================================================

Poison: a batch holding an event whose ``id`` is in the poison set is rejected whole with 400.

Control endpoints (JSON): ``POST /_control/faults`` with any of ``{"clear": bool, "script":
[kind | {"kind", "status"?, "retry_after"?, "seconds"?, "then"?}], "probabilities": {kind:
p}, "poison": [id], "unpoison": [id], "seed": int, "retry_after": int, "hang_seconds":
float}`` (answers the fault configuration, as does ``GET /_control/faults``);
``GET /_control/events``; ``GET /_control/requests``; ``GET /_control/stats``;
``POST /_control/reset`` (``{"faults": bool}``, default true); ``GET /health``.

Run as a process: ``python -m meterbridge_dev.fakes.openmeter_sink --port P [--api-key K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

INGEST_PATH = "/api/v1/events"
SINGLE_MEDIA_TYPE = "application/cloudevents+json"
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
JSON_MEDIA_TYPE = "application/json"
PROBLEM_MEDIA_TYPE = "application/problem+json"

FAULT_KINDS = ("ok", "error", "throttle", "unavailable", "hang", "record_then_fail")
_DEFAULT_STATUS = {
    "ok": 204,
    "error": 500,
    "throttle": 429,
    "unavailable": 503,
    "hang": 204,
    "record_then_fail": 500,
}
REQUIRED_ATTRIBUTES = ("id", "source", "type", "subject")


@dataclass(frozen=True)
class Fault:
    """One scripted response. ``None`` fields take the state's defaults."""

    kind: str = "ok"
    status: int | None = None
    retry_after: int | None = None
    seconds: float | None = None
    then: str = "ok"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.then not in ("ok", "error"):
            raise ValueError("'then' must be 'ok' or 'error'")

    @classmethod
    def parse(cls, spec: Fault | str | dict[str, Any]) -> Fault:
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, str):
            return cls(kind=spec)
        if isinstance(spec, dict):
            unknown = set(spec) - {"kind", "status", "retry_after", "seconds", "then"}
            if unknown:
                raise ValueError(f"unknown fault fields {sorted(unknown)}")
            return cls(**spec)
        raise ValueError(f"a fault is a kind name or an object, not {spec!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class SinkState:
    """Recorded events, counters and fault configuration; safe to read from any thread."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        seed: int = 0,
        retry_after: int = 1,
        hang_seconds: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._seed = seed
        self._rng = random.Random(seed)
        self._retry_after = retry_after
        self._hang_seconds = hang_seconds
        self._script: list[Fault] = []
        self._probabilities: dict[str, float] = {}
        self._poison: set[str] = set()
        self._clear_records()

    # -- recording ------------------------------------------------------------------------

    def _clear_records(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._requests: list[dict[str, Any]] = []
        self._responses: Counter[int] = Counter()
        self._faults_injected: Counter[str] = Counter()
        self._accepted_batches = 0
        self._rejected_batches = 0

    def events(self) -> list[dict[str, Any]]:
        """Every recorded CloudEvent, in arrival order (re-sends appear again)."""
        with self._lock:
            return [dict(e) for e in self._events]

    def count(self, source: str, event_id: str) -> int:
        """How many times the event ``(source, id)`` was recorded."""
        with self._lock:
            return self._counts[(source, event_id)]

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def resent(self) -> dict[tuple[str, str], int]:
        """Events recorded more than once (harmless in OpenMeter, visible here)."""
        with self._lock:
            return {k: n for k, n in self._counts.items() if n > 1}

    def unique_keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._counts)

    def requests(self) -> list[dict[str, Any]]:
        """One entry per ingest request: ``{"n", "status", "fault", "ids", "recorded"}``."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": len(self._requests),
                "accepted_batches": self._accepted_batches,
                "rejected_batches": self._rejected_batches,
                "events_recorded": len(self._events),
                "unique_events": len(self._counts),
                "resent": [
                    {"source": s, "id": i, "count": n}
                    for (s, i), n in self._counts.items()
                    if n > 1
                ],
                "responses": {str(k): v for k, v in sorted(self._responses.items())},
                "faults_injected": dict(self._faults_injected),
            }

    def wait_for_events(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` events are recorded; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._events) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def reset(self, *, faults: bool = True) -> None:
        """Forget recorded events and counters; with ``faults`` also clear the fault setup."""
        with self._lock:
            self._clear_records()
            if faults:
                self._clear_faults_locked()
            self._changed.notify_all()

    def _record(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            for event in events:
                self._events.append(event)
                self._counts[(event["source"], event["id"])] += 1
            self._changed.notify_all()

    def _log_request(self, status: int, fault: str | None, ids: list[str], recorded: bool) -> None:
        with self._lock:
            self._requests.append(
                {
                    "n": len(self._requests) + 1,
                    "status": status,
                    "fault": fault,
                    "ids": ids,
                    "recorded": recorded,
                }
            )
            self._responses[status] += 1
            if fault is not None and fault != "ok":
                self._faults_injected[fault] += 1
            if status == 204:
                self._accepted_batches += 1
            elif status == 400:
                self._rejected_batches += 1
            self._changed.notify_all()

    # -- faults ---------------------------------------------------------------------------

    def script(self, *faults: Fault | str | dict[str, Any]) -> None:
        """Queue the next responses, in order (``"error"``, ``Fault("hang", seconds=2)``, ...)."""
        parsed = [Fault.parse(f) for f in faults]
        with self._lock:
            self._script.extend(parsed)

    def set_probabilities(self, **probabilities: float) -> None:
        """Replace the random fault mix, e.g. ``set_probabilities(error=0.1, throttle=0.05)``."""
        for kind, p in probabilities.items():
            if kind not in FAULT_KINDS or kind == "ok":
                raise ValueError(f"unknown fault kind {kind!r}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"probability of {kind} must be within [0, 1]")
        if sum(float(p) for p in probabilities.values()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        with self._lock:
            self._probabilities = {k: float(p) for k, p in probabilities.items() if float(p) > 0}

    def poison(self, *event_ids: str) -> None:
        """Reject (400, nothing recorded) any batch containing one of these event ids."""
        with self._lock:
            self._poison.update(event_ids)

    def unpoison(self, *event_ids: str) -> None:
        with self._lock:
            self._poison.difference_update(event_ids)

    def seed(self, seed: int) -> None:
        with self._lock:
            self._seed = seed
            self._rng = random.Random(seed)

    def set_defaults(
        self, *, retry_after: int | None = None, hang_seconds: float | None = None
    ) -> None:
        with self._lock:
            if retry_after is not None:
                self._retry_after = int(retry_after)
            if hang_seconds is not None:
                self._hang_seconds = float(hang_seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self._clear_faults_locked()

    def _clear_faults_locked(self) -> None:
        self._script.clear()
        self._probabilities = {}
        self._poison.clear()

    def faults(self) -> dict[str, Any]:
        """The fault configuration, in the shape ``POST /_control/faults`` accepts."""
        with self._lock:
            return {
                "script": [f.to_dict() for f in self._script],
                "probabilities": dict(self._probabilities),
                "poison": sorted(self._poison),
                "seed": self._seed,
                "retry_after": self._retry_after,
                "hang_seconds": self._hang_seconds,
            }

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a ``POST /_control/faults`` body; return the resulting configuration."""
        known = {
            "clear",
            "script",
            "probabilities",
            "poison",
            "unpoison",
            "seed",
            "retry_after",
            "hang_seconds",
        }
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        script = [Fault.parse(f) for f in spec.get("script") or []]
        if spec.get("clear"):
            self.clear_faults()
        if "probabilities" in spec:
            self.set_probabilities(**(spec["probabilities"] or {}))
        if script:
            self.script(*script)
        if spec.get("poison"):
            self.poison(*[str(i) for i in spec["poison"]])
        if spec.get("unpoison"):
            self.unpoison(*[str(i) for i in spec["unpoison"]])
        if spec.get("seed") is not None:
            self.seed(int(spec["seed"]))
        self.set_defaults(
            retry_after=spec.get("retry_after"), hang_seconds=spec.get("hang_seconds")
        )
        return self.faults()

    def _is_poisoned(self, ids: list[str]) -> str | None:
        with self._lock:
            for event_id in ids:
                if event_id in self._poison:
                    return event_id
            return None

    def _next_fault(self) -> tuple[Fault, int, float]:
        """The fault for this request, with the resolved Retry-After and hang seconds."""
        with self._lock:
            if self._script:
                fault = self._script.pop(0)
            elif self._probabilities:
                draw = self._rng.random()
                fault = Fault("ok")
                acc = 0.0
                for kind in FAULT_KINDS:
                    p = self._probabilities.get(kind, 0.0)
                    acc += p
                    if p and draw < acc:
                        fault = Fault(kind)
                        break
            else:
                fault = Fault("ok")
            retry_after = self._retry_after if fault.retry_after is None else fault.retry_after
            seconds = self._hang_seconds if fault.seconds is None else fault.seconds
            return fault, math.ceil(retry_after), float(seconds)


# -- validation ----------------------------------------------------------------------------


def _problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


# RFC 3339 ``date-time`` (what Go's time.RFC3339 parses): a full date, time and offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_FLOAT64_MAX = sys.float_info.max


class StrictJSONError(ValueError):
    """The body is not JSON as Go's ``encoding/json`` reads it."""


def _refuse_constant(name: str) -> Any:
    raise StrictJSONError(f"invalid character {name[0]!r} looking for beginning of value")


def _float64(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text} overflows float64")
    return value


def _int64ish(text: str) -> int:
    value = int(text)
    if abs(value) > _FLOAT64_MAX:
        raise StrictJSONError(f"number {text[:20]}... overflows float64")
    return value


def strict_json(raw: bytes) -> Any:
    """Parse ``raw`` as Go's ``encoding/json`` would accept it, or raise ``StrictJSONError``.

    Python's ``json`` also reads ``NaN``, ``Infinity`` and numbers past the float64 range
    (``1e400`` becomes ``inf``); OpenMeter refuses them, so the stand-in does too.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_float64, parse_int=_int64ish
        )
    except StrictJSONError:
        raise
    except RecursionError:
        raise StrictJSONError("exceeded max depth") from None
    except ValueError as exc:
        raise StrictJSONError(str(exc)) from None


def validate_event(event: Any) -> list[str]:
    """Problems with one CloudEvent, as OpenMeter would see them (empty when valid)."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    errors: list[str] = []
    if event.get("specversion") != "1.0":
        errors.append('specversion must be "1.0"')
    for attribute in REQUIRED_ATTRIBUTES:
        value = event.get(attribute)
        if not isinstance(value, str) or not value:
            errors.append(f"{attribute} is required and must be a non-empty string")
    value = event.get("time")
    if value is not None and (not isinstance(value, str) or not _RFC3339.match(value)):
        errors.append("time must be an RFC 3339 timestamp")
    elif value is not None:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            errors.append("time must be an RFC 3339 timestamp")
    value = event.get("datacontenttype")
    if value is not None and value != "application/json":
        errors.append('datacontenttype must be "application/json"')
    value = event.get("dataschema")
    if value is not None and (
        not isinstance(value, str) or not value or not urlsplit(value).scheme
    ):
        errors.append("dataschema must be a URI")
    if event.get("data") is not None and not isinstance(event["data"], dict):
        errors.append("data must be a JSON object")
    return errors


# -- app -----------------------------------------------------------------------------------


def create_app(state: SinkState | None = None) -> FastAPI:
    """The sink's ASGI app; ``app.state.sink`` is its ``SinkState``."""
    sink = state if state is not None else SinkState()
    app = FastAPI(
        title="OpenMeter ingest sink (meterbridge local stand-in)", docs_url=None, redoc_url=None
    )
    app.state.sink = sink
    # Meters and their query API (local/openmeter_query.py), over what was recorded.
    from meterbridge_dev.fakes import openmeter_query

    openmeter_query.install(app, sink.events, sink.api_key)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(INGEST_PATH)
    async def ingest(request: Request) -> Response:
        expected = f"Bearer {sink.api_key}"
        if sink.api_key is not None and request.headers.get("authorization", "") != expected:
            sink._log_request(401, None, [], False)
            return _problem(401, "Unauthorized", "missing or invalid bearer token")
        # OpenMeter switches on the header exactly: a parameter or another case is refused.
        media_type = request.headers.get("content-type", "")
        if media_type not in (SINGLE_MEDIA_TYPE, BATCH_MEDIA_TYPE, JSON_MEDIA_TYPE):
            sink._log_request(400, None, [], False)
            return _problem(400, "Bad Request", f"invalid content type: {media_type}")
        try:
            body = strict_json(await request.body())
        except StrictJSONError as exc:
            sink._log_request(400, None, [], False)
            return _problem(400, "Bad Request", f"invalid event: {exc}")

        if media_type == SINGLE_MEDIA_TYPE or (
            media_type == JSON_MEDIA_TYPE and isinstance(body, dict)
        ):
            if not isinstance(body, dict):
                sink._log_request(400, None, [], False)
                return _problem(
                    400,
                    "Bad Request",
                    f"invalid event: {SINGLE_MEDIA_TYPE} body must be one JSON object",
                )
            events = [body]
        else:
            if not isinstance(body, list) or (media_type == JSON_MEDIA_TYPE and not body):
                sink._log_request(400, None, [], False)
                return _problem(400, "Bad Request", "invalid event: no events found")
            events = body

        invalid = []
        for index, event in enumerate(events):
            problems = validate_event(event)
            if problems:
                invalid.append({"index": index, "errors": problems})
        ids = [str(e.get("id")) for e in events if isinstance(e, dict)]
        if invalid:
            sink._log_request(400, None, ids, False)
            return _problem(400, "Bad Request", "invalid event: batch rejected", errors=invalid)

        poisoned = sink._is_poisoned(ids)
        if poisoned is not None:
            sink._log_request(400, "poison", ids, False)
            return _problem(
                400,
                "Bad Request",
                f"event {poisoned!r} was rejected; batch rejected",
                errors=[{"index": ids.index(poisoned), "errors": ["rejected event"]}],
            )

        fault, retry_after, seconds = sink._next_fault()
        kind = fault.kind
        if kind == "hang":
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:  # the server is stopping: answer, record nothing
                sink._log_request(503, fault.kind, ids, False)
                return _problem(503, "Service Unavailable", "server shutting down")
            kind = "ok" if fault.then == "ok" else "error"
        status = fault.status or _DEFAULT_STATUS[kind]

        if kind in ("ok", "record_then_fail"):
            sink._record([dict(e) for e in events])
            sink._log_request(status if kind == "record_then_fail" else 204, fault.kind, ids, True)
            if kind == "ok":
                return Response(status_code=204)
            return _problem(
                status, "Internal Server Error", "injected fault: stored, acknowledgement lost"
            )

        sink._log_request(status, fault.kind, ids, False)
        if kind in ("throttle", "unavailable"):
            title = "Too Many Requests" if status == 429 else "Service Unavailable"
            response = _problem(status, title, f"injected fault: {fault.kind}")
            response.headers["Retry-After"] = str(retry_after)
            return response
        return _problem(status, "Internal Server Error", f"injected fault: {fault.kind}")

    @app.get("/_control/events")
    async def control_events() -> dict[str, Any]:
        events = sink.events()
        return {"count": len(events), "events": events}

    @app.get("/_control/requests")
    async def control_requests() -> dict[str, Any]:
        return {"requests": sink.requests()}

    @app.get("/_control/stats")
    async def control_stats() -> dict[str, Any]:
        return sink.stats()

    @app.get("/_control/faults")
    async def control_get_faults() -> dict[str, Any]:
        return sink.faults()

    @app.post("/_control/faults")
    async def control_faults(request: Request) -> Response:
        try:
            spec = json.loads(await request.body() or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            return JSONResponse(sink.configure(spec))
        except (ValueError, TypeError) as exc:
            return _problem(400, "Bad Request", str(exc))

    @app.post("/_control/reset")
    async def control_reset(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            spec = json.loads(raw) if raw else {}
        except ValueError:
            spec = {}
        sink.reset(faults=bool(spec.get("faults", True)) if isinstance(spec, dict) else True)
        return {"reset": True}

    return app


def main(argv: list[str] | None = None) -> None:
    from meterbridge_dev.stack.servers import serve_until_signalled

    parser = argparse.ArgumentParser(
        prog="python -m meterbridge_dev.fakes.openmeter_sink",
        description="OpenMeter-compatible ingest sink with fault injection",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="expected bearer token (none: accept any)")
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    args = parser.parse_args(argv)
    serve_until_signalled(create_app(SinkState(args.api_key, seed=args.seed)), args.host, args.port)


if __name__ == "__main__":
    main()
