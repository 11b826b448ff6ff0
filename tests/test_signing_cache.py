"""The signing keyring is read once per KEYRING_TTL_SECONDS per process, not on every publish and claim.

A real host (StandaloneHost over a settings dict standing in for a secrets
backend) counts its reads; environment variables are the same ones Airflow reads.
"""

from __future__ import annotations

import pytest

from taskflow_exclusive import signing
from taskflow_exclusive.errors import SigningKeyError
from taskflow_exclusive.host import StandaloneHost, install_host
from taskflow_exclusive.signing import SIGNING_VARIABLE, forget_signing_keys, signing_keys

KEY_ENV = f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}"
OLD, NEW = "o" * 32, "n" * 32


class CountingHost(StandaloneHost):
    """Settings from a dict (a secrets backend that os.environ does not show), reads counted."""

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        self.reads = 0

    def variable(self, key: str) -> str | None:
        self.reads += 1
        return super().variable(key)


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    settings = {KEY_ENV: OLD}
    host = CountingHost(settings)
    previous = install_host(host)
    forget_signing_keys()
    yield host, settings
    install_host(previous)
    forget_signing_keys()


def test_the_keyring_is_read_once_for_many_signatures(backend):
    host, _ = backend
    signatures = {signing_keys().sign(b"payload") for _ in range(20)}
    assert len(signatures) == 1 and host.reads == 1


def test_a_change_in_the_backend_applies_once_the_cached_keyring_is_forgotten(backend):
    host, settings = backend
    before = signing_keys().sign(b"payload")
    settings[KEY_ENV] = NEW  # rotated in the secrets backend
    assert signing_keys().sign(b"payload") == before  # within KEYRING_TTL_SECONDS: the cached keyring
    forget_signing_keys()
    assert signing_keys().sign(b"payload") != before and host.reads == 2


def test_with_no_time_to_live_every_call_reads_the_keyring(backend, monkeypatch):
    host, settings = backend
    monkeypatch.setattr(signing, "KEYRING_TTL_SECONDS", 0.0)
    before = signing_keys().sign(b"payload")
    settings[KEY_ENV] = NEW
    assert signing_keys().sign(b"payload") != before and host.reads == 2


def test_a_change_of_the_environment_variable_applies_at_once(backend, monkeypatch):
    _, settings = backend
    settings.clear()
    monkeypatch.setenv(KEY_ENV, OLD)
    settings[KEY_ENV] = OLD
    before = signing_keys().sign(b"payload")
    monkeypatch.setenv(KEY_ENV, NEW)  # what Airflow reads first in a task
    settings[KEY_ENV] = NEW
    assert signing_keys().sign(b"payload") != before


def test_a_missing_keyring_is_remembered_and_still_refused_every_time(backend):
    host, settings = backend
    settings.clear()
    for _ in range(3):
        with pytest.raises(SigningKeyError, match="No signing key is configured"):
            signing_keys()
    assert host.reads == 1  # the Variable once (a StandaloneHost has no connections to read)


def test_an_unusable_keyring_is_never_cached(backend):
    host, settings = backend
    settings[KEY_ENV] = "too short"
    for _ in range(2):
        with pytest.raises(SigningKeyError, match="cannot be used"):
            signing_keys()
    assert host.reads == 2
