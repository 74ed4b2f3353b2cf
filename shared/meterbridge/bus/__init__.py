"""The event bus: NATS JetStream subjects, and publishing behind a circuit breaker."""
