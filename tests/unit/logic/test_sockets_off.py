import socket

import pytest

from tests.unit.logic.conftest import SocketsOff


def test_a_connection_attempt_fails_in_logic_unit_tests() -> None:
    with pytest.raises(SocketsOff):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as s, pytest.raises(SocketsOff):
        s.connect(("127.0.0.1", 9))
