"""Unit tests of pure logic run with sockets off: a test that reaches a network fails loudly.

The logic under test gets an in-memory repository from ``tests/support/fakes``; nothing here
talks to moto, NATS or an HTTP server.
"""

import socket

import pytest


class SocketsOff(RuntimeError):
    """A pure-logic unit test tried to open a network connection."""


@pytest.fixture(autouse=True)
def _sockets_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise SocketsOff("sockets are off in tests/unit/logic: use a fake repository")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
