"""ECS entry point of the streaming service: FastAPI served by uvicorn (not a Lambda).

``python app.py`` listens on ``0.0.0.0:$PORT`` (8080 by default). On SIGTERM (ECS stop) the
app ends every SSE stream with a ``shutdown`` event, uvicorn waits for them at most
``GRACEFUL_S``, then NATS is drained: the task exits well inside the 30 s StopTimeout.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import uvicorn

from meterbridge_streaming.limits import BodyLimit
from meterbridge_streaming.service import create_app
from meterbridge_streaming.serving import uvicorn_options

# Stream responses end within a second of SIGTERM; this bounds a stuck one.
GRACEFUL_S = 15

app = create_app()


def _exit_cleanly(signum: int, frame: Any) -> None:
    sys.exit(0)


def main() -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; with this
    # as the original handler that ends in exit code 0 (a clean stop) instead of 143.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # The entry point reads only where to listen; everything else is Settings.
    # Body caps on every route, and header/body read deadlines (meterbridge_streaming.serving).
    uvicorn.run(
        BodyLimit(app),
        **uvicorn_options(
            host=os.environ.get("HOST", "0.0.0.0"),
            port=int(os.environ.get("PORT", "8080")),
            timeout_graceful_shutdown=GRACEFUL_S,
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips="*",
            log_level=os.environ.get("UVICORN_LOG_LEVEL", "info"),
        ),
    )


if __name__ == "__main__":
    main()
