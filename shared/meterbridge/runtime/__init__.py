"""The cold-start measures, in one place, each installed explicitly by a handler's init.

- ``init_phase.InitPhase``: the init without the cyclic GC, its objects frozen after.
- ``fastapi_probe.install()``: FastAPI's pydantic.v1 probe, answered without importing v1.
- ``tracer.HandlerTracer``: Powertools' Tracer where tracing is on, no X-Ray SDK where it is off.
- ``lazy.LazyLoader`` and ``lazy.LAZY_MODULES``: the declared list of modules loaded on first use.
- ``aws.client()``: AWS clients from botocore alone (no boto3, s3transfer, multiprocessing).

Nothing here runs on import; functions/*/app.py call them inside ``with InitPhase():``
(docs/performance/cold_start.md).
"""
