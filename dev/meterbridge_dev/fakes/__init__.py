"""Stand-ins of the external systems (moto server, OpenMeter, Stripe) on loopback."""
