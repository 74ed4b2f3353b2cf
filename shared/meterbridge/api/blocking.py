"""Blocking work (boto3 calls) from async routes: inline on Lambda, on a thread elsewhere.

Under Mangum a Lambda invocation is one request on its own event loop: a thread hop would
only add its cost (about 200 us here). Under uvicorn (the local stack, the streaming task)
many requests share the loop, so blocking calls go to the thread pool, at most
``request.state.max_in_flight`` of one tenant at once, and a tenant spending its burst
(``request.state.bursting``) one at a time while other tenants' calls run or wait
(logic/rate.py ``gate``: a burst goes on in the gaps instead of ahead of everyone else).
"""

from collections.abc import Callable

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


__all__ = ["on_lambda", "run_blocking"]
