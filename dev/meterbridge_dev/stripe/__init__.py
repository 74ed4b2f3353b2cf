"""Operator work on the Stripe integration that no Lambda runs: ``meterbridge stripe reconcile``
(events the webhook missed) and ``meterbridge stripe sync-catalog`` (plans as Stripe prices).

They use the layer (``meterbridge``) against the deployed tables; the layer never imports them.
"""
