"""Which meterbridge an admin command talks to, how it authenticates, and how it prints.

- ``--stack-name NAME`` or ``--config-env ENV`` (dev, staging, prod): a deployed stack. The admin
  API URL is the stack's ``HttpApiUrl`` output (CloudFormation), requests are signed with SigV4
  (botocore's signer, the standard credential chain, ``--profile``, ``--region``). Without
  ``--stack-name`` the name is samconfig.toml's ``stack_name`` of that environment.
- ``--url URL`` (or ``METERBRIDGE_URL``): that server. SigV4 when it is an ``execute-api`` host or
  the local stack at that URL runs ``--admin-auth iam``; otherwise the bearer token.
- neither: the local stack from its state file (``meterbridge dev``), with its admin auth mode.

Every failure is a ``CliError``: one line on stderr, exit status 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import re
import tomllib
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer

from meterbridge_dev.cli.state import read_state, state_path

EXECUTE_API = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")
CONFIG_ENVS = {"dev": "default", "default": "default", "staging": "staging", "prod": "prod"}


DEBUG = {"on": False}  # --debug (set by the root command): tracebacks instead of one line


class CliError(Exception):
    """A failure the operator can act on, printed as one line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Options:
    url: str | None = None
    stack_name: str | None = None
    config_env: str | None = None
    profile: str | None = None
    region: str | None = None
    as_json: bool = False


@dataclass
class Target:
    url: str
    auth: str  # "token" | "iam"
    where: str
    region: str | None = None
    profile: str | None = None
    outputs: dict[str, str] | None = None
    state: dict[str, Any] | None = None


_options: contextvars.ContextVar[Options | None] = contextvars.ContextVar(
    "cli_options", default=None
)


def current_options() -> Options:
    return _options.get() or Options()


# -- the options every admin command takes ----------------------------------------------------

_COMMON: list[tuple[str, Any, Any]] = [
    (
        "url",
        Annotated[
            str | None,
            typer.Option("--url", envvar="METERBRIDGE_URL", help="Base URL of the admin API"),
        ],
        None,
    ),
    (
        "stack_name",
        Annotated[
            str | None,
            typer.Option(
                "--stack-name",
                envvar="METERBRIDGE_STACK_NAME",
                help="Deployed stack: URL from its outputs, requests signed with SigV4",
            ),
        ],
        None,
    ),
    (
        "config_env",
        Annotated[
            str | None,
            typer.Option(
                "--config-env",
                help="samconfig.toml environment (dev, staging, prod) naming the stack",
            ),
        ],
        None,
    ),
    (
        "profile",
        Annotated[str | None, typer.Option("--profile", help="AWS profile (SigV4)")],
        None,
    ),
    (
        "region",
        Annotated[str | None, typer.Option("--region", help="AWS region (SigV4)")],
        None,
    ),
    (
        "as_json",
        Annotated[bool, typer.Option("--json", help="Print the API's JSON (for scripts)")],
        False,
    ),
]


def admin_command[F: Callable[..., Any]](fn: F) -> F:
    """Add the target and output options to a command; ``resolve()`` and ``show()`` read them."""
    sig = inspect.signature(fn, eval_str=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in _COMMON
    ]
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        else p
        for p in sig.parameters.values()
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        opts = Options(**{name: kwargs.pop(name) for name, _, _ in _COMMON})
        token = _options.set(opts)
        try:
            return fn(**kwargs)
        except CliError as exc:
            if DEBUG["on"]:
                raise
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(exc.code) from exc
        finally:
            _options.reset(token)

    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{p.name: p.annotation for p in params},
        **{name: ann for name, ann, _ in _COMMON},
        "return": sig.return_annotation,
    }
    return wrapper  # type: ignore[return-value]


# -- resolving the target ---------------------------------------------------------------------


def samconfig_stack_name(config_env: str | None) -> str:
    """``stack_name`` of a samconfig.toml environment (dev is ``[default]``)."""
    env = CONFIG_ENVS.get(config_env or "default", config_env or "default")
    for candidate in (Path.cwd() / "samconfig.toml", _repo_root() / "samconfig.toml"):
        if candidate.is_file():
            config = tomllib.loads(candidate.read_text())
            name = config.get(env, {}).get("global", {}).get("parameters", {}).get("stack_name")
            if not name:
                raise CliError(f"{candidate.name} has no stack_name for environment {env!r}")
            return str(name)
    raise CliError("no samconfig.toml here: pass --stack-name")


def _repo_root() -> Path:
    import meterbridge

    return Path(meterbridge.__file__).resolve().parents[2]


def boto_session(profile: str | None, region: str | None) -> Any:
    import boto3
    import botocore.exceptions

    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise CliError(f"AWS profile {profile!r} is not configured") from exc


def stack_outputs(
    stack: str, profile: str | None, region: str | None
) -> tuple[dict[str, str], str]:
    """The stack's outputs and its region."""
    import botocore.exceptions

    session = boto_session(profile, region)
    if not session.region_name:
        raise CliError("no AWS region: pass --region or set AWS_REGION")
    cfn = session.client("cloudformation")
    try:
        answer = cfn.describe_stacks(StackName=stack)
    except botocore.exceptions.ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise CliError(f"stack {stack} in {session.region_name}: {message}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}
    return outputs, str(session.region_name)


def resolve(opts: Options | None = None) -> Target:
    opts = opts or current_options()
    if opts.stack_name or opts.config_env:
        stack = opts.stack_name or samconfig_stack_name(opts.config_env)
        outputs, region = stack_outputs(stack, opts.profile, opts.region)
        url = outputs.get("HttpApiUrl")
        if not url:
            raise CliError(f"stack {stack} has no HttpApiUrl output (is it a meterbridge stack?)")
        return Target(
            url=url.rstrip("/"),
            auth="iam",
            where=f"stack {stack} ({region})",
            region=region,
            profile=opts.profile,
            outputs=outputs,
        )
    state = read_state()
    if opts.url:
        url = opts.url.rstrip("/")
        host = urlsplit(url).hostname or ""
        match = EXECUTE_API.search(host)
        local = state if state and state.get("url", "").rstrip("/") == url else None
        auth = "iam" if match or (local and local.get("admin_auth") == "iam") else "token"
        url_region: str | None = opts.region or (match.group(1) if match else None)
        if local and not url_region:
            url_region = local.get("region")
        return Target(url, auth, url, url_region, opts.profile, state=local)
    if state is None:
        raise CliError(
            f"the local stack is not running (no {state_path()}): start it with `meterbridge dev`,"
            " or pass --url or --stack-name"
        )
    return Target(
        url=str(state["url"]).rstrip("/"),
        auth=str(state.get("admin_auth", "token")),
        where=f"local stack {state['url']}",
        region=opts.region or state.get("region"),
        profile=opts.profile,
        state=state,
    )


# -- authentication ---------------------------------------------------------------------------


class SigV4(httpx.Auth):
    """Sign each request for ``execute-api`` with botocore's SigV4 signer."""

    requires_request_body = True
    SIGNED = ("host", "content-type", "idempotency-key")

    def __init__(self, profile: str | None, region: str | None) -> None:
        import botocore.exceptions

        session = boto_session(profile, region)
        try:
            credentials = session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise CliError(f"AWS credentials: {exc}") from exc
        if credentials is None:
            raise CliError(
                "no AWS credentials found (set AWS_PROFILE, pass --profile, or export"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        self.credentials = credentials
        self.region = region or session.region_name or "us-east-1"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        aws = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={k: v for k, v in request.headers.items() if k.lower() in self.SIGNED},
        )
        SigV4Auth(self.credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(
            aws
        )
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
        yield request


@contextmanager
def admin_client(target: Target | None = None) -> Iterator[httpx.Client]:
    """An HTTP client for the target's admin API; transport errors become one line."""
    target = target or resolve()
    auth: httpx.Auth | None = None
    headers: dict[str, str] = {}
    if target.auth == "iam":
        auth = SigV4(target.profile, target.region)
    else:
        token = os.environ.get("METERBRIDGE_ADMIN_TOKEN", "")
        if token:
            headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=target.url, headers=headers, auth=auth, timeout=30.0) as http:
        try:
            yield http
        except httpx.ConnectError as exc:
            hint = " (is `meterbridge dev` running?)" if target.state is None else ""
            raise CliError(f"cannot reach {target.url}: {_reason(exc)}{hint}") from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"{target.url} did not answer in 30 s") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"{target.url}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


# -- output -----------------------------------------------------------------------------------

HINTS = {
    401: "check METERBRIDGE_ADMIN_TOKEN (it must match the one `meterbridge dev` runs with)",
    403: "check your AWS credentials: the caller needs execute-api:Invoke on the admin routes",
}


def error_line(resp: httpx.Response) -> str:
    try:
        payload = resp.json()
    except ValueError:
        payload = None
    code, message = "http_error", resp.text.strip()[:200] or resp.reason_phrase
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            code = str(err.get("code", code))
            message = str(err.get("message", message))
            details = err.get("details")
            if details:
                message += " " + json.dumps(details, separators=(",", ":"))[:300]
        elif "message" in payload:  # API Gateway's own answers: {"message": "Forbidden"}
            code, message = "forbidden" if resp.status_code == 403 else code, payload["message"]
    hint = HINTS.get(resp.status_code)
    return f"{resp.status_code} {code}: {message}" + (f" ({hint})" if hint else "")


def show(resp: httpx.Response, as_json: bool | None = None) -> Any:
    """Print the answer (a table, or JSON with ``--json``); an HTTP error is one line, exit 1."""
    if resp.status_code >= 400:
        raise CliError(error_line(resp))
    try:
        payload = resp.json()
    except ValueError as exc:
        raise CliError(f"{resp.status_code}: the answer is not JSON: {resp.text[:200]}") from exc
    as_json = current_options().as_json if as_json is None else as_json
    typer.echo(json.dumps(payload, indent=2) if as_json else render_table(payload))
    return payload


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _rows_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in columns and not isinstance(value, dict | list):
                columns.append(key)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def render_table(payload: Any, indent: str = "") -> str:
    """A list of objects as columns; an object as ``key  value`` lines (nested ones indented)."""
    if isinstance(payload, list):
        if all(isinstance(r, dict) for r in payload):
            return _rows_table(payload)
        return "\n".join(indent + _cell(v) for v in payload)
    if not isinstance(payload, dict):
        return indent + _cell(payload)
    width = max((len(k) for k in payload), default=0)
    lines: list[str] = []
    for key, value in payload.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(render_table(value, indent + "  "))
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            lines.append(f"{indent}{key}:")
            lines += [indent + "  " + line for line in _rows_table(value).splitlines()]
        else:
            lines.append(f"{indent}{key.ljust(width)}  {_cell(value)}")
    return "\n".join(lines)
