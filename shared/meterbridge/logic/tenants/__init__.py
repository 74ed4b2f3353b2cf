"""Tenants, by job: ``provisioning`` (create, idempotent and resumable), ``queries`` (read,
list), ``lifecycle`` (plan change, suspend, resume, offboard) and ``events`` (the lifecycle
CloudEvents and their live publication). docs/tenants.md describes the state machine.

The sync functions do the work (DynamoDB and Stripe are blocking clients); the async ones are
what routes await: they run the work on a thread and then publish the lifecycle CloudEvent to
NATS on the caller's event loop (best effort: the event is already in the outbox, written in
the same DynamoDB transaction as the state change it announces).
"""
