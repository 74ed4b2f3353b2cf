import socket

import pytest


def test_a_connection_attempt_fails_in_logic_unit_tests() -> None:
    with pytest.raises(RuntimeError, match="sockets are off"):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as s, pytest.raises(RuntimeError, match="sockets are off"):
        s.connect(("127.0.0.1", 9))
