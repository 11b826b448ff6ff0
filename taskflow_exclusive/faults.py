"""Which failures mean "could not reach the store" (retry is safe), told apart from the rest.

:class:`~taskflow_exclusive.errors.ClaimStoreUnavailableError` promises that
retrying is safe and will work once the store is back. Only failures that are
positively about reaching a server qualify: a refused or reset connection, a
timeout, a name that does not resolve, a server that says it is busy or
restarting. A wrong password, a missing database, a constraint violation or
a bug are not outages, and are never reported as one.

Client libraries (botocore, aiohttp, redis-py, SQLAlchemy drivers) have
their own exception trees; each ledger adds what it knows of its client
(:func:`taskflow_exclusive.claims.base.reaching` takes a ``misconfigured``
classifier), and this module recognises the common ground without importing
any of them (it is imported on every claim).

Example::

    >>> is_unreachable(ConnectionRefusedError(111, "Connection refused"))
    True
    >>> is_unreachable(PermissionError(13, "Permission denied"))
    False
"""

from __future__ import annotations

import errno
import socket

from taskflow_exclusive.errors import ClaimError, ClaimStoreConfigError, ClaimStoreUnavailableError

__all__ = ["claim_failure", "describe", "is_unreachable"]

_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EPIPE,
    }
)

# Exception class names that mean "no answer from the server" in the clients we use, matched by
# name so that this module imports none of them: botocore (EndpointConnectionError,
# ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError), aiohttp (ServerDisconnectedError,
# ClientConnectorError, ServerTimeoutError), urllib3/requests (NewConnectionError, ProtocolError),
# redis-py (ConnectionError, TimeoutError, BusyLoadingError; not AuthenticationError),
# SQLAlchemy (DisconnectionError).
_UNREACHABLE_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServerDisconnectedError",
        "ClientConnectorError",
        "ServerTimeoutError",
        "ClientOSError",
        "NewConnectionError",
        "ProtocolError",
        "BusyLoadingError",
        "DisconnectionError",
        "ConnectionError",
        "TimeoutError",
    }
)


def is_unreachable(exc: BaseException) -> bool:
    """``True`` if ``exc`` (or an exception it was raised from) means the server was not reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unreachable_here(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unreachable_here(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if any("Authentication" in name for name in names):
        return False  # redis-py's AuthenticationError subclasses its ConnectionError
    # asyncio.TimeoutError (a class of its own on Python 3.10) is matched by its name below.
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    return not names.isdisjoint(_UNREACHABLE_NAMES)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, for error messages (no SQL, no stack)."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines() or [""]
    return f"{type(original).__name__}: {lines[0]}"


def claim_failure(
    ledger: str, uri: str, exc: BaseException, fix: str | None = None, unreachable: bool = False
) -> ClaimError:
    """The :class:`ClaimError` for ``exc``, raised by ``ledger`` while claiming ``uri``.

    A ``fix`` makes it a :class:`ClaimStoreConfigError`; an outage
    (``unreachable`` or :func:`is_unreachable`) a
    :class:`ClaimStoreUnavailableError`; anything else a plain :class:`ClaimError`.
    """
    if fix is not None:
        return ClaimStoreConfigError(
            f"The {ledger} refused a claim on {uri}: {describe(exc)}. {fix} Nothing was handed "
            "out; retrying will not help until this is fixed.",
            ledger=ledger,
            uri=uri,
        )
    if unreachable or is_unreachable(exc):
        return ClaimStoreUnavailableError(
            f"Could not record or read a claim on {uri} in the {ledger}: {describe(exc)}. No value "
            "was handed out; retry when the store is reachable.",
            ledger=ledger,
            uri=uri,
        )
    return ClaimError(
        f"The {ledger} failed unexpectedly on a claim on {uri}: {describe(exc)}. No value was "
        "handed out. This is neither a known outage nor a known misconfiguration; please report it "
        "with the traceback.",
        ledger=ledger,
        uri=uri,
    )
