"""OpenMeter's meter and query API over httpx (``api/openapi.yaml``): list, create and update
meters; query a meter. Failures to reach OpenMeter are ``OpenMeterUnavailable``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meterbridge.adapters.openmeter import OpenMeterMisconfigured, OpenMeterUnavailable
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import httpx
else:
    httpx = LazyLoader("httpx", globals(), "httpx")

METERS_PATH = "/api/v1/meters"


class OpenMeterApi:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.openmeter_base_url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if settings.openmeter_api_key:
            self.headers["Authorization"] = f"Bearer {settings.openmeter_api_key}"
        self.timeout = settings.openmeter_timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = httpx.request(
                method, self.base + path, headers=self.headers, timeout=self.timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise OpenMeterUnavailable(f"OpenMeter is unreachable ({type(exc).__name__})") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise OpenMeterUnavailable(f"OpenMeter answered {resp.status_code}")
        if resp.status_code >= 400:
            raise OpenMeterMisconfigured(
                f"OpenMeter refused {method} {path}: {resp.status_code}",
                details=_body(resp),
            )
        return None if resp.status_code == 204 else resp.json()

    def list_meters(self) -> list[dict[str, Any]]:
        return list(self._call("GET", METERS_PATH))

    def create_meter(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", METERS_PATH, json=body))

    def update_meter(self, slug: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PUT", f"{METERS_PATH}/{slug}", json=body))

    def query(self, slug: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """``GET /api/v1/meters/{slug}/query`` with the params as given (repeatable keys)."""
        return dict(self._call("GET", f"{METERS_PATH}/{slug}/query", params=params))


def _body(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:500]
