"""Stripe: verify a delivery, translate its event, resolve its tenant, apply it once."""
