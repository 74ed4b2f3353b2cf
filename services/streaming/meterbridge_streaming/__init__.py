"""The streaming service (issue 7): NATS JetStream to Server-Sent Events.

- ``bridge``: one NATS connection and ONE JetStream consumer per process, a circuit breaker,
  reconnect with backoff, and an in-memory fallback bus while NATS is down.
- ``fanout``: per-tenant fan-out to SSE clients; each frame encoded once, bounded queues.
- ``tokens``: short-lived stream tokens for browsers (EventSource cannot set headers).
- ``service``: the FastAPI routes, the lifespan and ``create_app()`` for uvicorn on ECS.

See docs/streaming.md.
"""
