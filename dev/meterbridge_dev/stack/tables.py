"""DynamoDB tables built from ``template.yaml`` itself, for the local stack and the tests.

The template is the one source of truth for key schemas and indexes (docs/data-model.md): the
moto server, test fixtures and LocalStack all create their tables from it, so a changed index
cannot drift between infrastructure and code.

PyYAML is imported lazily: it ships with moto (the ``local`` extra), not in the Lambda layer,
and nothing on Lambda imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mypy_boto3_dynamodb.client import DynamoDBClient

TABLE_TYPE = "AWS::DynamoDB::Table"
_COPIED = (
    "KeySchema",
    "AttributeDefinitions",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
)


def default_template_path() -> Path:
    """``template.yaml`` at the repository root (``shared/meterbridge/`` is two levels down)."""
    import meterbridge

    return Path(meterbridge.__file__).resolve().parents[2] / "template.yaml"


def load_template(template_path: str | Path | None = None) -> dict[str, Any]:
    """The template as plain data: short tags (``!Ref x``) in their long form (``{"Ref": x}``)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
        name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag_suffix == "GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    _Loader.add_multi_constructor("!", _intrinsic)
    path = Path(template_path) if template_path is not None else default_template_path()
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a CloudFormation template")
    return document


def _literal(value: Any, where: str) -> Any:
    """``value`` if it holds no intrinsic function (a local table cannot resolve one)."""
    if isinstance(value, dict):
        if any(key == "Ref" or key.startswith("Fn::") for key in value):
            raise ValueError(f"{where} uses an intrinsic function; table keys must be literal")
        return {key: _literal(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_literal(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def table_specs(template_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """For each ``AWS::DynamoDB::Table``: its ``create_table`` kwargs (no ``TableName``) and TTL.

    ``{logical_id: {"create_table": {...}, "ttl_attribute": "expires_at" | None}}``.
    Every table is created on demand (``PAY_PER_REQUEST``), as on AWS.
    """
    resources = load_template(template_path).get("Resources") or {}
    specs: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != TABLE_TYPE:
            continue
        props = resource.get("Properties") or {}
        kwargs: dict[str, Any] = {
            key: _literal(props[key], f"{logical_id}.{key}") for key in _COPIED if key in props
        }
        kwargs["BillingMode"] = "PAY_PER_REQUEST"
        if "StreamSpecification" in kwargs:
            # CloudFormation's form names the view only; the API wants it enabled explicitly.
            kwargs["StreamSpecification"] = {**kwargs["StreamSpecification"], "StreamEnabled": True}
        ttl = props.get("TimeToLiveSpecification") or {}
        ttl_attribute = ttl.get("AttributeName") if ttl.get("Enabled") is True else None
        specs[logical_id] = {"create_table": kwargs, "ttl_attribute": ttl_attribute}
    return specs


def create_tables(
    client: DynamoDBClient,
    names: Mapping[str, str],
    template_path: str | Path | None = None,
) -> list[str]:
    """Create the tables named in ``names`` (logical id -> table name) and enable their TTL.

    Only the logical ids in ``names`` are created, so a caller can create just the missing ones.
    Returns the names created.
    """
    specs = table_specs(template_path)
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise KeyError(f"not tables in template.yaml: {', '.join(unknown)}")
    created: list[str] = []
    for logical_id, table_name in names.items():
        spec = specs[logical_id]
        client.create_table(TableName=table_name, **spec["create_table"])
        client.get_waiter("table_exists").wait(
            TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        if spec["ttl_attribute"]:
            client.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"AttributeName": spec["ttl_attribute"], "Enabled": True},
            )
        created.append(table_name)
    return created
