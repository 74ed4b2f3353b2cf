"""HTTP surfaces: FastAPI routers served by Mangum on Lambda and by uvicorn locally.

Importing this package installs nothing: the cold-start measures (FastAPI's v1 probe among them)
are installed by each handler's init (``meterbridge.runtime``, functions/*/app.py).
"""
