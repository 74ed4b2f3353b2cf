"""Pydantic models: inputs, outputs, and the CloudEvents meterbridge emits."""
