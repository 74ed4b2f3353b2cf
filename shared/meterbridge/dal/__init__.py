"""The data access layer: the only code that touches boto3."""
