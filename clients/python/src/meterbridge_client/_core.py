"""What the sync and the async client share: settings, counters, event encoding, the buffer,
and how an answer from ``POST /v1/events`` decides a batch's fate."""

from __future__ import annotations

import json
import logging
import random
import time as _time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from meterbridge_client._durable import DurableBuffer
from meterbridge_client._ids import POOL_AGE_MS, IdPool, uuid7_at

logger = logging.getLogger("meterbridge_client")

EVENTS_PATH = "/v1/events"
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
# The server's limits (docs/usage.md): 1,000 events and 1,000,000 bytes per request,
# 65,536 bytes per event.
SERVER_MAX_EVENTS = 1000
SERVER_MAX_BYTES = 1_000_000
MAX_EVENT_BYTES = 65_536

FullPolicy = Literal["block", "drop"]


@dataclass(frozen=True)
class RejectedEvent:
    """An event the server refused for good (given to ``on_rejected`` and logged)."""

    event: dict[str, Any]
    status: int
    code: str | None
    message: str
    errors: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Stats:
    """Counters since the client was made (``buffered``: waiting now, in memory)."""

    recorded: int
    sent: int
    duplicates: int
    retried: int
    dropped: int
    rejected: int
    replayed: int
    requests: int
    buffered: int


@dataclass
class Config:
    api_key: str
    base_url: str
    max_batch_events: int = 500
    max_batch_bytes: int = 900_000
    flush_interval: float = 1.0
    max_buffer_events: int = 100_000
    max_buffer_bytes: int = 64 * 1024 * 1024
    on_full: FullPolicy = "block"
    block_timeout: float = 1.0
    backoff_base: float = 0.1
    backoff_max: float = 30.0
    timeout: float = 10.0
    close_timeout: float = 10.0
    durable_path: str | None = None
    on_rejected: Callable[[RejectedEvent], None] | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key is required")
        if not 1 <= self.max_batch_events <= SERVER_MAX_EVENTS:
            raise ValueError(f"max_batch_events must be 1..{SERVER_MAX_EVENTS}")
        if not MAX_EVENT_BYTES <= self.max_batch_bytes <= SERVER_MAX_BYTES:
            raise ValueError(f"max_batch_bytes must be {MAX_EVENT_BYTES}..{SERVER_MAX_BYTES}")
        if self.on_full not in ("block", "drop"):
            raise ValueError("on_full must be 'block' or 'drop'")
        if self.flush_interval <= 0 or self.max_buffer_events < 1:
            raise ValueError("flush_interval and max_buffer_events must be positive")
        self.base_url = self.base_url.rstrip("/")

    @property
    def url(self) -> str:
        return self.base_url + EVENTS_PATH

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": BATCH_MEDIA_TYPE}


class Pending:
    """One event, encoded: its id, its JSON, its record time (Unix ms) and its row in the
    durable buffer if any."""

    __slots__ = ("body", "id", "ms", "row")

    def __init__(self, event_id: str, body: bytes, ms: int, row: int | None = None) -> None:
        self.id = event_id
        self.body = body
        self.ms = ms
        self.row = row


# What record() buffers: (id, record ms, type, data, subject, time), encoded later by the
# sender (Core.encode_some), or a Pending already encoded (the durable buffer's path).
Entry = tuple[str, int, str, "dict[str, Any] | None", "str | None", "datetime | str | None"]


# NaN and Infinity are not JSON; the server refuses them, so the client does.
_ENCODE: Callable[[Any], str] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


try:  # CPython's C encoder made once: JSONEncoder.encode() builds one on every call
    from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

    if c_make_encoder is None:
        raise ImportError("no C encoder")

    # No markers (no circular-reference bookkeeping): the encoder keeps no state between
    # calls, so one serves every thread; a circular structure ends in RecursionError instead.
    _c_encoder = c_make_encoder(
        None, _not_json, encode_basestring, None, ":", ",", False, False, False
    )

    def _encode(value: Any) -> str:
        try:
            return "".join(_c_encoder(value, 0))
        except RecursionError:
            raise ValueError("data is nested too deeply or refers to itself") from None

    if _encode({"a": [1, 2.5, "é", None, True]}) == _ENCODE({"a": [1, 2.5, "é", None, True]}):
        _ENCODE = _encode
except (ImportError, TypeError):  # another Python: the public API
    pass
_second = (-1, "")
_time_ns = _time.time_ns
_TYPES: dict[str, str] = {}  # event type -> its JSON, for the few types a service records


def _stamp(ms: int) -> str:
    """RFC 3339 UTC time with milliseconds; the date part is formatted once per second."""
    global _second
    sec, milli = divmod(ms, 1000)
    cached_sec, prefix = _second
    if sec != cached_sec:
        prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
        _second = (sec, prefix)
    return f"{prefix}.{milli:03d}Z"


def _bad_type(type: Any) -> None:
    if not isinstance(type, str) or not type:
        raise ValueError("type must be a non-empty string")
    if len(_TYPES) < 1024:
        _TYPES[type] = _ENCODE(type)


def make_entry(
    type: str,
    data: dict[str, Any] | None,
    subject: str | None,
    id: str | None,
    time: datetime | str | None,
    pool: IdPool,
) -> Entry:
    """What record() does per call: the id and the record time fixed now (a retry, or a
    replay after a crash, sends the same id and time: the server counts it once), the
    arguments' shapes checked, a shallow copy of ``data``. No JSON, no time formatting: the
    sender does that (``encode_entry``); the id comes from the sender's pool when it has a
    fresh one (``_ids.IdPool``)."""
    ms = _time_ns() // 1_000_000
    if id is None:
        ids = pool.ids
        if ids and ms - pool.since < POOL_AGE_MS:
            try:
                id = ids.popleft()
            except IndexError:  # another thread took the last one
                id = uuid7_at(ms)
        else:
            pool.wanted = True
            id = uuid7_at(ms)
    elif not isinstance(id, str) or not id:
        raise ValueError("id must be a non-empty string")
    try:
        known = type in _TYPES
    except TypeError:
        known = False
    if not known:
        _bad_type(type)
    if data is not None:
        if not isinstance(data, dict):
            raise TypeError("data must be a dict")
        data = data.copy()  # the caller may reuse its dict; nested values are shared
    if time is not None and not isinstance(time, str):
        if not isinstance(time, datetime):
            raise TypeError("time must be a datetime or an RFC 3339 string")
        if time.tzinfo is None:
            raise ValueError("time must carry a time zone")
    if subject is not None and not isinstance(subject, str):
        raise TypeError("subject must be a string")
    return (id, ms, type, data, subject, time)


def encode_entry(entry: Entry) -> Pending:
    """The event as the server takes it; ``ValueError``/``TypeError`` when it cannot be
    sent (data that is not JSON, over 65,536 bytes). The time defaults to the id's own
    millisecond."""
    event_id, ms, type, data, subject, time = entry
    type_json = _TYPES.get(type) or _ENCODE(type)
    if time is None:
        stamp = f'"{_stamp(ms)}"'
    elif isinstance(time, datetime):
        stamp = _ENCODE(time.isoformat())
    else:
        stamp = _ENCODE(time)
    text = f'{{"id":{_ENCODE(event_id)},"type":{type_json},"time":{stamp}'
    if subject is not None:
        text += ',"subject":' + _ENCODE(subject)
    if data is not None:
        text += ',"data":' + _ENCODE(data)
    body = (text + "}").encode("utf-8")
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"an event is at most {MAX_EVENT_BYTES} bytes of JSON ({len(body)})")
    return Pending(event_id, body, ms)


def entry_event(entry: Entry) -> dict[str, Any]:
    """An event that could not be encoded, as given to ``on_rejected``."""
    event_id, ms, type, data, subject, time = entry
    event: dict[str, Any] = {"id": event_id, "type": type, "time": time or _stamp(ms)}
    if subject is not None:
        event["subject"] = subject
    if data is not None:
        event["data"] = data
    return event


def encode_batch(part: list[Pending]) -> bytes:
    return b"[" + b",".join(p.body for p in part) + b"]"


def backoff(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Full jitter (uniform in [0, min(cap, base * 2**attempt)]); never sooner than the
    server's ``Retry-After``, which is itself capped at ``cap``."""
    delay = random.uniform(0, min(cap, base * (2**attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retryable(resp: httpx.Response) -> bool:
    return resp.status_code == 429 or resp.status_code >= 500


@dataclass
class Outcome:
    """What to do with a part after its final (non-retryable) answer."""

    sent: int = 0
    duplicates: int = 0
    rejected: list[tuple[Pending, list[Any]]] = field(default_factory=list)
    status: int = 0
    code: str | None = None
    message: str = ""
    resend: list[list[Pending]] = field(default_factory=list)


def decide(part: list[Pending], resp: httpx.Response) -> Outcome:
    """A 2xx settles the part; a 400 or 413 for several events splits it (by the server's
    per-index details when given, else in halves) so only the bad events are refused; any
    other 4xx, or a 400 for one event, refuses the part."""
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        body = None
    if 200 <= status < 300:
        dup = body.get("duplicates", 0) if isinstance(body, dict) else 0
        dup = dup if isinstance(dup, int) else 0
        return Outcome(sent=len(part) - dup, duplicates=dup, status=status)
    error = body.get("error", {}) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    out = Outcome(status=status, code=error.get("code"), message=str(error.get("message", "")))
    details = error.get("details")
    if status in (400, 413) and len(part) > 1:
        bad = _bad_indexes(details, len(part))
        if bad:
            out.rejected = [(part[i], bad[i]) for i in sorted(bad)]
            rest = [p for i, p in enumerate(part) if i not in bad]
            if rest:
                out.resend = [rest]
        else:
            half = len(part) // 2
            out.resend = [part[:half], part[half:]]
        return out
    errors: list[Any] = [details] if details is not None else []
    out.rejected = [(p, errors) for p in part]
    return out


def _bad_indexes(details: Any, size: int) -> dict[int, list[Any]]:
    """The server's 400 names each bad event: ``[{index, errors}]``; a 413 for an event over
    the size limit gives ``{indexes: [...]}``."""
    bad: dict[int, list[Any]] = {}
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and isinstance(item.get("index"), int):
                errors = item.get("errors")
                bad[item["index"]] = errors if isinstance(errors, list) else []
    elif isinstance(details, dict) and isinstance(details.get("indexes"), list):
        bad = {i: [] for i in details["indexes"] if isinstance(i, int)}
    if not bad or any(not 0 <= i < size for i in bad):
        return {}
    return bad


# The sender encodes at most this many events per slice (about 100 us of Python), then lets
# go of its lock; while events wait unencoded it wakes every ENCODE_TICK seconds, so the
# encoding is spread in small slices and the byte bound is made exact soon after each call.
ENCODE_SLICE = 64
ENCODE_TICK = 0.05
GUESS_BYTES = 256.0  # the average event size assumed until the first events are encoded


class Core:
    """State and bookkeeping; the subclasses bring the locking and the sender.

    ``inbox`` holds what record() appended (entries, not yet encoded); ``ready`` what the
    sender has encoded (exact bytes). record()'s fast path only compares ``len(inbox)`` with
    two thresholds the sender keeps up to date: ``cap`` (room left, by count and by bytes at
    the average encoded size; 0 sends every call to the slow path: closed, durable) and
    ``kick_at`` (the size at which a batch is due and the sender must be woken).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.inbox: deque[Entry | Pending] = deque()
        self.ids = IdPool()  # filled by the sender, taken by record()
        self.ready: deque[Pending] = deque()
        self.ready_bytes = 0
        self.avg_bytes = GUESS_BYTES
        self.moved = 0  # events out of the inbox: encoded, or refused as not encodable
        self.sent = self.duplicates = self.retried = 0
        self.dropped = self.rejected = self.replayed = self.requests = 0
        self.closed = False
        self._warned_full = False
        self.limit = self.cap = self.kick_at = 0
        self.store: DurableBuffer | None = None
        if config.durable_path:
            self.store = DurableBuffer(config.durable_path)
            now_ms = _time.time_ns() // 1_000_000
            for row, body in self.store.load():
                event_id = json.loads(body).get("id", "")
                self.ready.append(Pending(event_id, body, now_ms, row))
                self.ready_bytes += len(body)
            self.replayed = self.moved = len(self.ready)
            if self.replayed:
                logger.info(
                    "meterbridge client: replaying %d events from the durable buffer",
                    self.replayed,
                )
        self.refresh()

    # -- buffer --------------------------------------------------------------------------

    def refresh(self) -> None:
        """The fast path's thresholds, from the encoded part's exact size and count."""
        c = self.config
        ready = len(self.ready)
        room = c.max_buffer_bytes - self.ready_bytes
        self.limit = max(0, min(c.max_buffer_events - ready, int(room // self.avg_bytes)))
        self.cap = 0 if self.closed or self.store is not None else self.limit
        more_bytes = c.max_batch_bytes - self.ready_bytes
        self.kick_at = max(1, min(c.max_batch_events - ready, int(more_bytes // self.avg_bytes)))

    def full(self) -> bool:
        return len(self.inbox) >= self.limit

    def admit(self, entry: Entry) -> None:
        """The slow path's append (the durable buffer: encoded and stored first)."""
        if self.store is None:
            self.inbox.append(entry)
            return
        try:
            pending = encode_entry(entry)
        except Exception:  # noqa: BLE001 - the sender refuses and reports it, as in memory
            self.inbox.append(entry)
            return
        pending.row = self.store.add(pending.body)
        self.inbox.append(pending)

    def encode_some(self, limit: int) -> list[tuple[Entry, Exception]]:
        """Move up to ``limit`` events from the inbox to ``ready``, encoded; what cannot be
        encoded is returned, to be reported (outside any lock) by ``refuse``."""
        inbox, ready = self.inbox, self.ready
        bad: list[tuple[Entry, Exception]] = []
        moved = encoded = size = 0
        while moved < limit:
            try:
                item = inbox.popleft()
            except IndexError:
                break
            moved += 1
            if isinstance(item, Pending):
                pending = item
            else:
                try:
                    pending = encode_entry(item)
                except Exception as exc:  # noqa: BLE001 - whatever it is, never the sender's end
                    bad.append((item, exc))
                    continue
                encoded += 1
                size += len(pending.body)
            ready.append(pending)
            self.ready_bytes += len(pending.body)
        if moved:
            self.moved += moved
            if encoded:
                self.avg_bytes = 0.75 * self.avg_bytes + 0.25 * (size / encoded)
            self.refresh()
        return bad

    def refuse(self, bad: list[tuple[Entry, Exception]]) -> None:
        """Report events that can never be sent (data not JSON, too large): counted as
        rejected, logged, given to ``on_rejected``; never sent."""
        for entry, exc in bad:
            self._reject(RejectedEvent(entry_event(entry), 0, "unencodable", str(exc)), entry[0])

    def drop(self, why: str) -> None:
        self.dropped += 1
        if not self._warned_full:
            self._warned_full = True
            logger.warning("meterbridge client: dropping events (%s); see stats().dropped", why)

    def due(self) -> bool:
        return (
            len(self.ready) >= self.config.max_batch_events
            or self.ready_bytes >= self.config.max_batch_bytes
        )

    def batch_wait(self, closing: bool, flush_wanted: bool) -> float | None:
        """0 when a batch should go now, else the seconds until the interval is reached for
        the oldest encoded event; None when nothing is encoded."""
        if not self.ready:
            return None
        if closing or flush_wanted or self.due():
            return 0.0
        interval = self.config.flush_interval
        return min(interval, max(0.0, self.ready[0].ms / 1000 + interval - _time.time()))

    def take(self) -> list[Pending]:
        """The next batch from the head of ``ready``, within the count and byte bounds."""
        part: list[Pending] = []
        size = 2
        limit = self.config.max_batch_bytes
        ready = self.ready
        while ready and len(part) < self.config.max_batch_events:
            nxt = len(ready[0].body) + 1
            if part and size + nxt > limit:
                break
            pending = ready.popleft()
            self.ready_bytes -= len(pending.body)
            part.append(pending)
            size += nxt
        self.refresh()
        return part

    def forget(self, part: list[Pending]) -> None:
        if self.store is not None:
            self.store.remove([p.row for p in part if p.row is not None])

    # -- outcomes ------------------------------------------------------------------------

    def settle(self, part: list[Pending], out: Outcome) -> None:
        """Count and forget what this answer settled (sent or refused)."""
        self.sent += out.sent
        self.duplicates += out.duplicates
        if out.sent or out.duplicates:
            self.forget(part)
            return
        for pending, errors in out.rejected:
            event = json.loads(pending.body)
            rejected = RejectedEvent(event, out.status, out.code, out.message, errors)
            self._reject(rejected, pending.id)
        self.forget([p for p, _ in out.rejected])

    def _reject(self, rejected: RejectedEvent, event_id: str) -> None:
        self.rejected += 1
        logger.warning(
            "meterbridge client: event %s rejected: %s %s %s",
            event_id,
            rejected.status,
            rejected.code,
            rejected.message,
        )
        if self.config.on_rejected is not None:
            try:
                self.config.on_rejected(rejected)
            except Exception:  # a faulty callback must not stop delivery
                logger.exception("meterbridge client: on_rejected callback failed")

    def give_up(self, parts: list[list[Pending]]) -> None:
        """Closing ran out of time: in-memory events are lost (counted); durable ones stay
        in the file for the next start."""
        left = sum(len(p) for p in parts) + len(self.ready) + len(self.inbox)
        if not left:
            return
        if self.store is not None:
            logger.warning(
                "meterbridge client: %d events not delivered; kept in %s for the next start",
                left,
                self.config.durable_path,
            )
        else:
            self.dropped += left
            logger.error("meterbridge client: %d events not delivered and dropped", left)
        self.ready.clear()
        self.inbox.clear()
        self.ready_bytes = 0
        self.refresh()

    def retry_delay(
        self, piece: list[Pending], attempt: int, resp: httpx.Response | None, reason: str
    ) -> float | None:
        """After one attempt: None when ``resp`` is final, else how long to wait before the
        next (counted and logged). ``resp`` is None after a connection error."""
        if resp is not None:
            if not retryable(resp):
                return None
            reason = str(resp.status_code)
        config = self.config
        hint = retry_after(resp) if resp is not None else None
        delay = backoff(attempt, config.backoff_base, config.backoff_max, hint)
        self.retried += len(piece)
        logger.info(
            "meterbridge client: batch of %d not delivered (%s); retry %d in %.2fs",
            len(piece),
            reason,
            attempt + 1,
            delay,
        )
        return delay

    def stats(self) -> Stats:
        return Stats(
            recorded=self.moved + len(self.inbox) - self.replayed,
            sent=self.sent,
            duplicates=self.duplicates,
            retried=self.retried,
            dropped=self.dropped,
            rejected=self.rejected,
            replayed=self.replayed,
            requests=self.requests,
            buffered=len(self.ready) + len(self.inbox),
        )

    def log_close(self) -> None:
        s = self.stats()
        logger.info(
            "meterbridge client closed: recorded=%d sent=%d duplicates=%d retried=%d "
            "dropped=%d rejected=%d replayed=%d requests=%d buffered=%d",
            s.recorded,
            s.sent,
            s.duplicates,
            s.retried,
            s.dropped,
            s.rejected,
            s.replayed,
            s.requests,
            s.buffered,
        )
        if self.store is not None:
            self.store.close()


class Abort(Exception):
    """Raised inside the sender when close() has run out of time."""
