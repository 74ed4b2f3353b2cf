"""Business logic: functions that take and return models; no HTTP, no boto3."""
