"""Signing keys: HMAC-SHA256 with a key id, several keys accepted, one signing.

Keys are settings of the deployment, read through the host (with Airflow:
its secrets backend), never from code or XCom:

- the Airflow Connection ``taskflow_exclusive_signing``, its password, or
- the Airflow Variable ``taskflow_exclusive_signing_secret`` (a name Airflow
  masks in the UI and in logs).

Either holds a keyring: one secret (its key id is ``default``), or JSON
naming the key that signs and every key still accepted, for rotation::

    {"sign_with": "2026-11", "keys": {"2026-11": "<secret>", "2026-05": "<old secret>"}}

Rotate by adding the new key, then switching ``sign_with`` to it, then (once
nothing signed with the old one is in flight) removing the old one. Each
secret must have at least 32 characters (``python -c "import secrets;
print(secrets.token_urlsafe(32))"``). A missing or unusable keyring is a
:class:`SigningKeyError` naming both settings: nothing is ever signed
without a key. The keyring's ``repr`` shows key ids only.

The keyring is read at most once every :data:`KEYRING_TTL_SECONDS` (5 s) per
process, not on every publish and claim (each read is a Variable and often a
Connection lookup through the API server and secrets backends). A rotation
made in Airflow therefore applies within those seconds; a change to either
setting's environment variable (``AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_SIGNING_SECRET``,
``AIRFLOW_CONN_TASKFLOW_EXCLUSIVE_SIGNING``) applies at once.
:func:`forget_signing_keys` drops the cached keyring.

Example::

    >>> keys = SigningKeys.parse('{"sign_with": "b", "keys": {"a": "%s", "b": "%s"}}' % ("x" * 32, "y" * 32))
    >>> keys
    SigningKeys(sign_with='b', accepted=['a', 'b'])
    >>> key_id, signature = keys.sign(b"payload")
    >>> key_id, keys.verify(key_id, b"payload", signature), keys.verify(key_id, b"other", signature)
    ('b', True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from taskflow_exclusive.errors import SigningKeyError, StorageConfigError
from taskflow_exclusive.memo import Memo

__all__ = [
    "KEYRING_TTL_SECONDS",
    "REQUIRE_SIGNED_OPTION",
    "SIGNING_CONNECTION",
    "SIGNING_VARIABLE",
    "SigningKeys",
    "canonical_json",
    "forget_signing_keys",
    "optional_signing_keys",
    "signatures_required",
    "signing_keys",
]

SIGNING_CONNECTION = "taskflow_exclusive_signing"
SIGNING_VARIABLE = "taskflow_exclusive_signing_secret"
REQUIRE_SIGNED_OPTION = "require_signed_handles"
DEFAULT_KEY_ID = "default"
MIN_SECRET_LENGTH = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SETTINGS = f"the Airflow Connection {SIGNING_CONNECTION!r} (password) or Variable {SIGNING_VARIABLE!r}"

KEYRING_TTL_SECONDS = 5.0
"""How long a process reuses the keyring it read (seconds); rotations apply within this time."""

# The environment variables through which Airflow also provides both settings: part of the
# cache key, so that changing them (a deployment's env, a test) applies at once.
_SETTING_ENV = (f"AIRFLOW_VAR_{SIGNING_VARIABLE.upper()}", f"AIRFLOW_CONN_{SIGNING_CONNECTION.upper()}")
_MISSING = object()  # cached: no keyring is configured
_keyrings: Memo[Any] = Memo()  # SigningKeys, or _MISSING


def forget_signing_keys() -> None:
    """Read the keyring again on next use (after changing it in Airflow; tests)."""
    _keyrings.clear()


def canonical_json(data: object) -> bytes:
    """The one byte form of a JSON document that is signed and verified."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class SigningKeys:
    """A keyring: the id of the key that signs, and every key accepted when verifying.

    Not a dataclass on purpose: nothing that prints objects field by field
    (reprs, test reports) may show a secret.
    """

    __slots__ = ("_keys", "sign_with", "source")

    def __init__(self, sign_with: str, keys: Mapping[str, bytes], source: str = "argument") -> None:
        self.sign_with = sign_with
        self._keys = dict(keys)
        self.source = source

    @property
    def key_ids(self) -> list[str]:
        """Every accepted key id (never the secrets)."""
        return sorted(self._keys)

    def __repr__(self) -> str:
        return f"SigningKeys(sign_with={self.sign_with!r}, accepted={self.key_ids})"

    @classmethod
    def parse(cls, text: str, *, source: str = "argument") -> SigningKeys:
        """A keyring from one secret or its JSON form; :class:`SigningKeyError` for anything else."""
        text = text.strip()
        if not text.startswith("{"):
            return cls._checked(DEFAULT_KEY_ID, {DEFAULT_KEY_ID: text}, source)
        try:
            data = json.loads(text)
        except ValueError:
            raise _unusable(source, "it starts with '{' but is not JSON") from None
        if not isinstance(data, dict) or set(data) != {"sign_with", "keys"}:
            raise _unusable(
                source, 'its JSON must be exactly {"sign_with": <key id>, "keys": {<key id>: <secret>}}'
            )
        keys = data["keys"]
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise _unusable(source, '"keys" must map key ids to secret strings')
        if not isinstance(data["sign_with"], str):
            raise _unusable(source, '"sign_with" must be a key id (a string)')
        return cls._checked(data["sign_with"], keys, source)

    @classmethod
    def _checked(cls, sign_with: str, secrets: Mapping[str, str], source: str) -> SigningKeys:
        for key_id, secret in secrets.items():
            if not _KEY_ID.match(key_id):
                raise _unusable(source, f"key id {key_id[:70]!r} is not 1-64 characters of [A-Za-z0-9._-]")
            if len(secret) < MIN_SECRET_LENGTH:
                raise _unusable(
                    source,
                    f"the secret of key {key_id!r} has {len(secret)} characters, fewer than "
                    f"{MIN_SECRET_LENGTH}",
                )
        if sign_with not in secrets:
            raise _unusable(source, f"sign_with names {sign_with[:70]!r}, which is not among its keys")
        return cls(sign_with, {k: v.encode() for k, v in secrets.items()}, source)

    def sign(self, payload: bytes) -> tuple[str, str]:
        """``(key_id, hex HMAC-SHA256)`` of ``payload`` with the signing key."""
        return self.sign_with, _mac(self._keys[self.sign_with], payload)

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    def verify(self, key_id: str, payload: bytes, signature: str) -> bool:
        """Whether ``signature`` is ``key_id``'s HMAC of ``payload`` (``False`` for unknown keys)."""
        key = self._keys.get(key_id)
        given = str(signature).encode("utf-8", "surrogatepass")
        return key is not None and hmac.compare_digest(_mac(key, payload).encode(), given)


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def signing_keys() -> SigningKeys:
    """The deployment's keyring, read at most every :data:`KEYRING_TTL_SECONDS` in a process.

    The Variable ``taskflow_exclusive_signing_secret`` when set, else the
    password of the Connection ``taskflow_exclusive_signing``. Raises
    :class:`SigningKeyError` naming both when neither holds a usable keyring
    (an unusable one is read again on every call, never cached).
    """
    from taskflow_exclusive.host import current_host

    host = current_host()

    def read() -> Any:
        try:
            return _read_signing_keys(host)
        except SigningKeyError as exc:
            if exc.problem == "missing":
                return _MISSING  # remembered too; an unusable keyring raises and is not
            raise

    key = (id(host), *(os.environ.get(name) for name in _SETTING_ENV))
    keys = _keyrings.get(key, read, max_age=KEYRING_TTL_SECONDS)
    if keys is _MISSING:
        raise _missing()
    return keys


def _read_signing_keys(host: Any) -> SigningKeys:
    variable_source = f"Airflow Variable {SIGNING_VARIABLE!r}"
    try:
        text = host.variable(SIGNING_VARIABLE)
    except StorageConfigError as exc:
        raise _unusable(variable_source, f"it could not be read ({type(exc).__name__})") from exc
    if text is not None:
        return SigningKeys.parse(text, source=variable_source)
    connection_source = f"Airflow Connection {SIGNING_CONNECTION!r}"
    try:
        password = host.connection(SIGNING_CONNECTION).password
    except StorageConfigError:
        password = None
    if not password:
        raise _missing()
    return SigningKeys.parse(password, source=connection_source)


def _missing() -> SigningKeyError:
    return SigningKeyError(
        f"No signing key is configured: set {_SETTINGS} to a secret of at least "
        f"{MIN_SECRET_LENGTH} characters (or a keyring JSON, see the README's 'Hand-offs to "
        "triggered DAGs'). Grants and signed handles are never made or accepted without one.",
        setting=_SETTINGS,
        problem="missing",
    )


def optional_signing_keys() -> SigningKeys | None:
    """The keyring when one is configured, ``None`` when none is; an unusable one is an error.

    Handles are signed when a key is configured. A keyring that is set but
    broken raises :class:`SigningKeyError` rather than silently signing nothing.
    """
    try:
        return signing_keys()
    except SigningKeyError as exc:
        if exc.problem == "missing":
            return None
        raise


def signatures_required() -> bool:
    """``[taskflow_exclusive] require_signed_handles``: consumers refuse unsigned handles."""
    from taskflow_exclusive.host import current_host

    raw = (current_host().option(REQUIRE_SIGNED_OPTION) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise SigningKeyError(
            f"[taskflow_exclusive] {REQUIRE_SIGNED_OPTION} is {raw!r}, not True or False "
            f"(AIRFLOW__TASKFLOW_EXCLUSIVE__{REQUIRE_SIGNED_OPTION.upper()}).",
            setting=f"[taskflow_exclusive] {REQUIRE_SIGNED_OPTION}",
            problem="not a boolean",
        )
    return raw in ("true", "1")


def _unusable(source: str, problem: str) -> SigningKeyError:
    return SigningKeyError(
        f"The signing keyring in {source} cannot be used: {problem}. It must be one secret of at "
        f"least {MIN_SECRET_LENGTH} characters, or "
        '{"sign_with": "<key id>", "keys": {"<key id>": "<secret>", ...}}. '
        "(The secret is not shown.)",
        setting=source,
        problem=problem,
    )
