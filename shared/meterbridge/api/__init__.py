"""HTTP surfaces: FastAPI routers served by Mangum on Lambda and by uvicorn locally."""

from meterbridge.api import fastapi_v1_probe

# Before any router module below declares a route: FastAPI would import pydantic.v1 there.
fastapi_v1_probe.install()
