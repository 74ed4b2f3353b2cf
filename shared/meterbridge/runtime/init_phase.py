"""The Lambda init phase of a handler module: imports and app build without the cyclic GC.

Nearly everything a handler's imports and app build allocate lives as long as the process, so
collections during init only scan live objects (30-50 ms of a cold start here). At the end the
init objects are frozen (moved out of the collector's generations), so no later collection
rescans them: the work is removed, not moved to the first request
(docs/performance/cold_start.md). No import here: it runs before the heavy ones.

    with InitPhase():
        fastapi_probe.install()
        from meterbridge.api.usage import create_app
        app = create_app()
"""

from __future__ import annotations

import gc
from typing import Any


class InitPhase:
    """Context manager: the GC off inside, the objects built inside frozen on the way out."""

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        gc.freeze()
        if self._was_enabled:
            gc.enable()
