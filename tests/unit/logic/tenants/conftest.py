"""The tenant and key logic on in-memory repositories (tests/support/fakes/tenants.py)."""

import pytest

from meterbridge.logic import auth
from tests.support.fakes.tenants import FakeStore, install


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    auth.forget()
    return install(monkeypatch)
