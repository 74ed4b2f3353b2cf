"""Local stand-ins for the real parts (moto, nats-server, OpenMeter, Stripe)."""
