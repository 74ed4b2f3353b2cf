"""Configuration, read once from the environment (the same names on AWS and locally).

Logic never reads ``os.environ``: it receives a ``Settings`` (or reads ``get_settings()``).
boto3 honours ``AWS_ENDPOINT_URL`` by itself, so pointing at a moto server needs no switch here.
"""

from functools import lru_cache
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    from aws_lambda_powertools.utilities import parameters
else:  # only where a secret comes from SSM; it imports boto3
    parameters = LazyLoader("parameters", globals(), "aws_lambda_powertools.utilities.parameters")


def _split_csv(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    raise ValueError("expected a comma-separated string")


class Settings(BaseSettings):
    """Every variable meterbridge reads. Documented in docs/environment-variables.md."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # DynamoDB tables: no defaults, so a missing variable fails when the settings load, naming
    # it, rather than reading or writing a table of a default name (template.yaml, the local
    # stack and the tests set all four).
    tenants_table: str = Field(alias="TENANTS_TABLE")
    events_table: str = Field(alias="EVENTS_TABLE")
    usage_table: str = Field(alias="USAGE_TABLE")
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE")
    # The DynamoDB client: sized for DynamoDB on AWS; tests and the local stack raise the
    # timeouts for a moto server on a loaded machine (docs/testing.md)
    dynamodb_connect_timeout_s: float = Field(2.0, alias="DYNAMODB_CONNECT_TIMEOUT_S", gt=0, le=300)
    dynamodb_read_timeout_s: float = Field(5.0, alias="DYNAMODB_READ_TIMEOUT_S", gt=0, le=900)
    dynamodb_max_attempts: int = Field(5, alias="DYNAMODB_MAX_ATTEMPTS", ge=1, le=20)

    # NATS JetStream
    nats_enabled: bool = Field(False, alias="NATS_ENABLED")
    nats_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], alias="NATS_SERVERS"
    )
    nats_stream: str = Field("METERBRIDGE", alias="NATS_STREAM")
    nats_connect_timeout_s: float = Field(2.0, alias="NATS_CONNECT_TIMEOUT_S")
    # Credentials and TLS (deployed: always; locally: off). The password comes from SSM on AWS.
    nats_user: str = Field("", alias="NATS_USER")
    nats_password: str = Field("", alias="NATS_PASSWORD", repr=False)
    nats_password_parameter: str = Field("", alias="NATS_PASSWORD_PARAMETER")
    nats_tls: bool = Field(False, alias="NATS_TLS")
    nats_tls_ca_file: str = Field("", alias="NATS_TLS_CA_FILE")

    # OpenMeter
    openmeter_enabled: bool = Field(True, alias="OPENMETER_ENABLED")
    openmeter_base_url: str = Field("https://openmeter.cloud", alias="OPENMETER_BASE_URL")
    openmeter_api_key: str = Field("", alias="OPENMETER_API_KEY", repr=False)
    openmeter_api_key_parameter: str = Field("", alias="OPENMETER_API_KEY_PARAMETER")
    openmeter_timeout_s: float = Field(10.0, alias="OPENMETER_TIMEOUT_S")
    flush_batch_size: int = Field(100, alias="FLUSH_BATCH_SIZE", ge=1, le=1000)
    flush_concurrency: int = Field(4, alias="FLUSH_CONCURRENCY", ge=1, le=64)

    # Stripe
    stripe_api_key: str = Field("", alias="STRIPE_API_KEY", repr=False)
    stripe_api_key_parameter: str = Field("", alias="STRIPE_API_KEY_PARAMETER")
    stripe_api_base: str = Field("", alias="STRIPE_API_BASE")
    stripe_webhook_secret: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="STRIPE_WEBHOOK_SECRET", repr=False
    )
    stripe_webhook_secret_parameter: str = Field("", alias="STRIPE_WEBHOOK_SECRET_PARAMETER")

    # Admin and keys
    admin_token: str = Field("", alias="METERBRIDGE_ADMIN_TOKEN", repr=False)
    admin_auth: str = Field("token", alias="METERBRIDGE_ADMIN_AUTH", pattern="^(token|iam)$")
    key_pepper: str = Field("", alias="METERBRIDGE_KEY_PEPPER", repr=False)
    key_pepper_parameter: str = Field("", alias="METERBRIDGE_KEY_PEPPER_PARAMETER")
    key_environment: str = Field("test", alias="METERBRIDGE_KEY_ENV", pattern="^(live|test)$")
    plans_file: str = Field("", alias="METERBRIDGE_PLANS_FILE")
    key_cache_ttl_s: float = Field(10.0, alias="METERBRIDGE_KEY_CACHE_TTL_S", ge=0, le=60)
    stream_token_secret: str = Field("", alias="METERBRIDGE_STREAM_TOKEN_SECRET", repr=False)

    # Logging (Powertools reads POWERTOOLS_* itself; listed here so they are documented and checked)
    powertools_service_name: str = Field("meterbridge", alias="POWERTOOLS_SERVICE_NAME")
    powertools_metrics_namespace: str = Field("Meterbridge", alias="POWERTOOLS_METRICS_NAMESPACE")
    log_level: str = Field("INFO", alias="POWERTOOLS_LOG_LEVEL")

    # Streaming service (docs/streaming.md)
    nats_stream_replicas: int = Field(1, alias="NATS_STREAM_REPLICAS", ge=1, le=5)
    sse_heartbeat_s: float = Field(15.0, alias="SSE_HEARTBEAT_S", gt=0, le=300)
    sse_queue_size: int = Field(1000, alias="SSE_QUEUE_SIZE", ge=1, le=100_000)
    sse_retry_ms: int = Field(3000, alias="SSE_RETRY_MS", ge=0, le=600_000)
    sse_replay_buffer: int = Field(10_000, alias="SSE_REPLAY_BUFFER", ge=0, le=1_000_000)
    stream_token_ttl_s: int = Field(300, alias="STREAM_TOKEN_TTL_S", ge=10, le=3600)

    @field_validator("nats_servers", "stripe_webhook_secret", mode="before")
    @classmethod
    def _csv(cls, value: object) -> list[str]:
        return _split_csv(value)


# Secret value field -> the field naming its SSM parameter (SecureString) on AWS.
SECRET_PARAMETERS = {
    "openmeter_api_key": "openmeter_api_key_parameter",
    "stripe_api_key": "stripe_api_key_parameter",
    "stripe_webhook_secret": "stripe_webhook_secret_parameter",
    "key_pepper": "key_pepper_parameter",
    "nats_password": "nats_password_parameter",
}


def _with_secrets(settings: Settings) -> Settings:
    """Fill secrets that are not in the environment from SSM (template.yaml passes the names).

    Powertools Parameters caches each value for 5 minutes, so a rotated secret is picked up by
    warm functions without a redeploy once ``get_settings.cache_clear()`` runs (the webhook does
    on a signature failure).
    """
    update: dict[str, object] = {}
    for field, parameter_field in SECRET_PARAMETERS.items():
        name = getattr(settings, parameter_field)
        if getattr(settings, field) or not name:
            continue
        if field == "nats_password" and not settings.nats_enabled:
            continue  # nothing connects to NATS: do not make a cold start wait for SSM
        value = parameters.get_parameter(name, decrypt=True, max_age=300) or ""
        update[field] = _split_csv(value) if field == "stripe_webhook_secret" else value
    return settings.model_copy(update=update) if update else settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests call ``get_settings.cache_clear()`` after changing env."""
    return _with_secrets(Settings())
