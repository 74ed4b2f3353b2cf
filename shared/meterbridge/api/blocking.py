"""Blocking work (boto3 calls) from async routes: inline on Lambda, on a thread elsewhere.

Under Mangum a Lambda invocation is one request on its own event loop: a thread hop would
only add its cost (about 200 us here). Under uvicorn (the local stack, the streaming task)
many requests share the loop, so blocking calls go to the thread pool, at most
``request.state.max_in_flight`` of one tenant at once, and a tenant spending its burst
(``request.state.bursting``) one at a time while other tenants' calls run or wait
(logic/rate.py ``gate``: a burst goes on in the gaps instead of ahead of everyone else).

``run_shared`` lets a tenant's identical reads that wait at the gate share one read: a
request that finds an identical read of its tenant still waiting for its turn joins it, so
the read it gets starts after the request arrived (it sees every write acknowledged before).
Each joined request still does its own part (``each``: its read-window slot); what they
share is the rest (``once``). A read that has started is never joined.
"""

import asyncio
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from meterbridge.logic import rate


def on_lambda(request: Request) -> bool:
    """Mangum puts the Lambda event in the ASGI scope; uvicorn does not."""
    return "aws.event" in request.scope


async def run_blocking[**P, T](
    request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    if on_lambda(request):
        return fn(*args, **kwargs)
    limit = getattr(request.state, "max_in_flight", None)
    if limit is None:
        return await run_in_threadpool(fn, *args, **kwargs)
    state = request.state
    bursting = getattr(state, "bursting", False)
    async with rate.gate(state.tenant_id, limit, bursting, getattr(state, "pace_s", 0.0)):
        return await run_in_threadpool(fn, *args, **kwargs)


@dataclass
class _Shared:
    """A tenant's read waiting for its turn at the gate, and the requests that joined it."""

    answers: list[asyncio.Future[Any]] = field(default_factory=list)


# event loop -> (tenant, key) -> the read still waiting at the gate
_waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Shared]] = (
    weakref.WeakKeyDictionary()
)
_tasks: set[asyncio.Task[None]] = set()  # running shared reads (a task needs a reference)


def _work[T](
    members: int, each: Callable[[], None], once: Callable[[], T]
) -> tuple[list[BaseException | None], T | None, BaseException | None]:
    """``each`` per member (its error is its own), then ``once`` if any member passed."""
    errors: list[BaseException | None] = []
    for _ in range(members):
        try:
            each()
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - this member's answer, raised in its request
            errors.append(exc)
    if all(e is not None for e in errors):
        return errors, None, None
    try:
        return errors, once(), None
    except Exception as exc:  # noqa: BLE001 - every passing member's answer
        return errors, None, exc


async def _run[T](
    request: Request,
    key: Hashable,
    shared: _Shared,
    each: Callable[[], None],
    once: Callable[[], T],
) -> None:
    state = request.state
    waiting = _waiting[asyncio.get_running_loop()]
    try:
        async with rate.gate(
            state.tenant_id,
            state.max_in_flight,
            getattr(state, "bursting", False),
            getattr(state, "pace_s", 0.0),
        ):
            if waiting.get(key) is shared:
                del waiting[key]  # started: whoever comes now waits for the next one
            errors, result, failure = await run_in_threadpool(
                _work, len(shared.answers), each, once
            )
    except BaseException as exc:  # the gate or the thread hop failed: every member's answer
        if waiting.get(key) is shared:
            del waiting[key]
        for answer in shared.answers:
            if not answer.done():
                answer.set_exception(exc)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    for answer, error in zip(shared.answers, errors, strict=True):
        if answer.done():  # its request was cancelled meanwhile
            continue
        if error is not None:
            answer.set_exception(error)
        elif failure is not None:
            answer.set_exception(failure)
        else:
            answer.set_result(result)


async def run_shared[T](
    request: Request, key: Hashable, each: Callable[[], None], once: Callable[[], T]
) -> T:
    """``each()`` then ``once()`` as one blocking call, ``once`` shared with the tenant's
    identical (same ``key``) requests that wait at the gate with it."""
    limit = getattr(request.state, "max_in_flight", None)
    if on_lambda(request) or limit is None:
        return await run_blocking(request, _alone, each, once)
    loop = asyncio.get_running_loop()
    waiting = _waiting.get(loop)
    if waiting is None:
        waiting = _waiting[loop] = {}
    full_key = (request.state.tenant_id, key)
    answer: asyncio.Future[T] = loop.create_future()
    shared = waiting.get(full_key)
    if shared is not None:
        shared.answers.append(answer)
    else:
        shared = waiting[full_key] = _Shared([answer])
        task = loop.create_task(_run(request, full_key, shared, each, once))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    return await answer


def _alone[T](each: Callable[[], None], once: Callable[[], T]) -> T:
    each()
    return once()


__all__ = ["on_lambda", "run_blocking", "run_shared"]
