"""The dev kit: the local stack, the stand-ins of OpenMeter, Stripe and DynamoDB, and the
``meterbridge`` command. Never deployed (``pip install -e ".[dev]"``, or scripts/bootstrap.sh)."""
