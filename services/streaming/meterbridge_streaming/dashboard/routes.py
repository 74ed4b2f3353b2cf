"""Serve the live usage dashboard: ``GET /`` (the page) and ``GET /static/<file>``.

The assets are package data (``meterbridge/dashboard/static/``), read with
``importlib.resources`` so they ship wherever the package does (the Lambda layer, the
streaming image, a wheel). Only the files listed in ``_ASSETS`` are served: no path from the
URL ever reaches the filesystem.

The page talks to ``/v1/stream-tokens``, ``/v1/stream`` and ``/v1/usage`` on its own origin,
or on ``api_base`` when the usage API lives elsewhere (docs/dashboard.md).
"""

from __future__ import annotations

import html
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response

from meterbridge.errors import NotFound

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

# The page runs only its own script and talks only to its own origin (plus ``api_base``).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{extra}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # The stream token rides in the EventSource URL: never leak URLs to other sites.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=8)
def asset(name: str) -> bytes:
    """The bytes of one packaged asset (``index.html``, ``app.js``, ``app.css``)."""
    return resources.files("meterbridge_streaming.dashboard").joinpath("static", name).read_bytes()


def create_router(api_base: str = "") -> APIRouter:
    """The dashboard routes; ``api_base`` (e.g. ``https://api.example.com``) is where the page
    calls ``/v1/usage`` when that is not this origin (it then needs CORS for this origin)."""
    api_base = api_base.rstrip("/")
    router = APIRouter(include_in_schema=False)
    page = asset("index.html").decode().replace("{{API_BASE}}", html.escape(api_base, quote=True))
    headers = {
        **_SECURITY_HEADERS,
        "Content-Security-Policy": _CSP.format(extra=f" {api_base}" if api_base else ""),
    }

    @router.get("/", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @router.get("/static/{name}")
    async def static_asset(name: str) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise NotFound("no such dashboard asset")
        return Response(asset(name), media_type=media_type, headers=_SECURITY_HEADERS)

    return router


def include_dashboard(app: FastAPI, api_base: str = "") -> None:
    """Serve the dashboard on ``app`` at ``/`` and ``/static/...``."""
    app.include_router(create_router(api_base))
