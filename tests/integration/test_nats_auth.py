"""NATS as deployed: credentials required, TLS to a cluster (real nats-server processes).

- The sidecar runs template.yaml's own start script (loopback, user and password from the
  environment), only with its ports and paths moved to the test's: a client with the settings'
  credentials publishes, one without or with a wrong password is refused.
- A TLS server (a certificate made here) takes the publisher and the streaming bridge over
  ``tls://`` with ``NATS_TLS_CA_FILE``; without the CA the certificate is not trusted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meterbridge.bus.publisher import Message, NatsPublisher
from meterbridge.bus.subjects import tenant_subject
from meterbridge.settings import Settings
from meterbridge_dev.stack.processes import free_port, nats_server_binary, wait_for_port
from meterbridge_dev.stack.tables import load_template
from meterbridge_streaming.bridge import NatsBridge

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cretNatsPassw0rd"
MSG = [Message(tenant_subject("t_0123456789abcdef", "usage"), "src#1", {"n": 1})]

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed")


def sidecar_script() -> str:
    template = load_template(ROOT / "template.yaml")
    task = template["Resources"]["StreamingTaskDefinition"]["Properties"]
    sidecar = next(c["Fn::If"][1] for c in task["ContainerDefinitions"] if "Fn::If" in c)
    assert sidecar["EntryPoint"] == ["/bin/sh", "-c"]
    return " ".join(sidecar["Command"])


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(name="sidecar")
def sidecar_fixture() -> Iterator[str]:
    """template.yaml's sidecar script on free ports and a private directory; its URL."""
    port, monitor = free_port(), free_port()
    binary = nats_server_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="mb-nats-sidecar-") as tmp:
        script = (
            sidecar_script()
            .replace("127.0.0.1:4222", f"127.0.0.1:{port}")
            .replace("127.0.0.1:8222", f"127.0.0.1:{monitor}")
            .replace("/tmp/nats", tmp)
        )
        env = {
            **os.environ,
            "PATH": f"{Path(binary).parent}:{os.environ.get('PATH', '')}",
            "NATS_USER": "meterbridge",
            "NATS_PASSWORD": PASSWORD,
        }
        proc = start(["/bin/sh", "-c", script], env, port)
        try:
            yield f"nats://127.0.0.1:{port}"
        finally:
            stop(proc)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("NATS_ENABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_sidecar_takes_the_publisher_with_the_settings_credentials(
    sidecar: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the sidecar as deployed and a publisher with NATS_USER / NATS_PASSWORD
    pub = NatsPublisher(
        settings(monkeypatch, NATS_SERVERS=sidecar, NATS_USER="meterbridge", NATS_PASSWORD=PASSWORD)
    )

    # When it publishes
    acked = pub.publish_sync(MSG)
    pub.close()

    # Then JetStream acknowledged the message
    assert acked == {"src#1"}


@pytest.mark.parametrize("password", ["", "wrong-password"], ids=["no-credentials", "wrong"])
def test_sidecar_refuses_a_client_without_the_password(
    sidecar: str, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    # Given a publisher without credentials, or with a wrong password
    env = {"NATS_SERVERS": sidecar}
    if password:
        env |= {"NATS_USER": "meterbridge", "NATS_PASSWORD": password}
    pub = NatsPublisher(settings(monkeypatch, **env))

    # When it publishes
    acked = pub.publish_sync(MSG)
    pub.close()

    # Then nothing was accepted (the caller keeps the event in its outbox)
    assert acked == set()


# -- TLS -------------------------------------------------------------------------------------


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterbridge test nats")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(name="tls_server")
def tls_server_fixture() -> Iterator[dict[str, Any]]:
    """A JetStream nats-server with TLS and a user/password, as an external cluster runs."""
    port = free_port()
    binary = nats_server_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="mb-nats-tls-") as tmp:
        cert, key = write_certificate(Path(tmp))
        cmd = [
            binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-sd",
            str(Path(tmp) / "js"),
            "--tls",
            "--tlscert",
            str(cert),
            "--tlskey",
            str(key),
            "--user",
            "meterbridge",
            "--pass",
            PASSWORD,
        ]
        proc = start(cmd, dict(os.environ), port)
        try:
            yield {"url": f"tls://127.0.0.1:{port}", "ca": str(cert)}
        finally:
            stop(proc)


def cluster_settings(
    monkeypatch: pytest.MonkeyPatch,
    server: dict[str, Any],
    *,
    ca: bool = True,
    password: bool = True,
) -> Settings:
    """What a deployed client gets for an external cluster: tls:// URL, NATS_TLS, the user and
    password; here also the test CA (``ca``), as ``NATS_TLS_CA_FILE`` gives a private one."""
    env = {"NATS_SERVERS": server["url"], "NATS_TLS": "true", "NATS_USER": "meterbridge"}
    if ca:
        env["NATS_TLS_CA_FILE"] = server["ca"]
    if password:
        env["NATS_PASSWORD"] = PASSWORD
    return settings(monkeypatch, **env)


def test_publisher_reaches_a_tls_cluster_with_its_ca(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the settings a deployed function gets: tls:// URL, NATS_TLS, credentials, the CA
    pub = NatsPublisher(cluster_settings(monkeypatch, tls_server))

    # When it publishes
    acked = pub.publish_sync(MSG)
    pub.close()

    # Then the message went over TLS and was acknowledged
    assert acked == {"src#1"}


def test_publisher_does_not_trust_an_unknown_certificate(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the right credentials, but not the server's CA (the system roots only)
    pub = NatsPublisher(cluster_settings(monkeypatch, tls_server, ca=False))

    # When it publishes
    acked = pub.publish_sync(MSG)
    pub.close()

    # Then the handshake failed: nothing sent, nothing acknowledged
    assert acked == set()


async def test_streaming_bridge_connects_over_tls_with_credentials(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the streaming task's settings against the TLS server
    bridge = NatsBridge(cluster_settings(monkeypatch, tls_server))

    # When it starts
    await bridge.start()
    try:
        connected = await bridge.wait_connected(timeout=60)
    finally:
        await bridge.drain()

    # Then it connected (and made its stream) over TLS
    assert connected


async def test_streaming_bridge_without_the_password_stays_on_the_fallback(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the streaming task's settings without a password
    bridge = NatsBridge(cluster_settings(monkeypatch, tls_server, password=False))

    # When it starts and tries for a while
    await bridge.start()
    try:
        connected = await bridge.wait_connected(timeout=10)
    finally:
        await bridge.drain()

    # Then it never connected
    assert not connected
