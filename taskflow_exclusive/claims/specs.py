"""What a ``claims=`` value means, and what a handle may record of it.

A claims spec is one of::

    redis://[user[:password]@]host[:port][/db][?prefix=...]     Redis (rediss:// for TLS)
    postgresql://user[:password]@host[:port]/db[?table=...]     any SQLAlchemy URL:
    mysql+pymysql://..., mariadb+pymysql://...                   PostgreSQL, MySQL/MariaDB,
    sqlite:////absolute/path/claims.db                           SQLite
    my_conn_id                                                   an Airflow connection

A bare name (no ``://``) is an Airflow connection id; its ``conn_type``
picks the ledger: ``redis`` for Redis, ``postgres``/``postgresql``,
``mysql``/``mariadb`` and ``sqlite`` for SQL. Options that URLs carry as
query parameters (``prefix``, ``table``, ``timeout``, ...) come from the
connection's extras (``claims_prefix``, ``claims_table``, ``timeout``, ...).

**What a handle records (never a secret).** A handle says which ledger
guards it, so that a consumer on another machine opens the same one. It
records:

- a connection id as is: each worker resolves it through its own Airflow
  connections (the recommended form when the store needs a password);
- a URL without secrets as is;
- a URL with a password (or a ``password``/``secret``/``token`` query
  parameter) with those values replaced by ``***``. A consumer that opens
  such a handle takes the full URL from its own Airflow Variable
  ``taskflow_exclusive_claims_url`` when that URL, withheld the same way,
  equals the recorded one; otherwise it refuses with a
  :class:`StorageConfigError` that says what to configure.

Example::

    >>> withhold_secrets("redis://app:s3cret@cache:6379/0?prefix=etl")
    'redis://app:***@cache:6379/0?prefix=etl'
    >>> has_withheld_secret("redis://app:***@cache:6379/0?prefix=etl")
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from taskflow_exclusive.errors import StorageConfigError
from taskflow_exclusive.host import current_host
from taskflow_exclusive.memo import Memo

if TYPE_CHECKING:
    from taskflow_exclusive.host import Connection

__all__ = [
    "WITHHELD",
    "LedgerTarget",
    "connection_scheme",
    "has_withheld_secret",
    "resolve_spec",
    "scheme_of",
    "withhold_secrets",
]

WITHHELD = "***"
_SECRET_PARAMETERS = ("pass", "secret", "token")

REDIS_CONN_TYPES = frozenset({"redis"})
SQL_CONN_TYPES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}


@dataclass(frozen=True)
class LedgerTarget:
    """A resolved spec: the URL to connect to and what a handle may record.

    ``url`` may hold a password: it lives in this process only. ``recorded``
    never does. A Redis connection gives ``client`` (``redis.Redis`` arguments,
    password included) and a ``url`` without secrets that only names it.
    ``options`` are the ledger's own settings taken from an Airflow connection's extras
    (URLs carry theirs as query parameters).
    """

    url: str
    recorded: str
    conn_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)  # redis.Redis(...) arguments of a connection

    @property
    def shown(self) -> str:
        """How messages name this store: the URL with secrets withheld, and the connection."""
        where = withhold_secrets(self.url)
        return f"{where} (Airflow connection {self.conn_id!r})" if self.conn_id else where


def scheme_of(spec: str) -> str:
    """The ledger scheme of a URL (``postgresql`` for ``postgresql+psycopg2://``), lower-cased."""
    return spec.split("://", 1)[0].split("+", 1)[0].lower()


def _is_secret_parameter(name: str) -> bool:
    return any(marker in name.lower() for marker in _SECRET_PARAMETERS)


def withhold_secrets(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    A URL without secrets comes back unchanged, character for character.
    Written here rather than taken from SQLAlchemy's
    ``render_as_string(hide_password=True)``: it serves Redis URLs too, masks
    secret query parameters (``?password=...``), and leaves every other
    character as written, so a recorded spec compares equal to a configured one.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{WITHHELD}@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_is_secret_parameter(name) for name, _ in pairs):
        pairs = [(name, WITHHELD if _is_secret_parameter(name) else value) for name, value in pairs]
        query = urlencode(pairs, safe="*/:")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return _join(parts.scheme, netloc, parts.path, query, parts.fragment)


def _join(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    """Inverse of ``urlsplit`` for ``scheme://`` URLs (``urlunsplit`` drops the ``//`` of
    ``sqlite:////abs/path``)."""
    return (
        f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
    )


def has_withheld_secret(url: str) -> bool:
    """Whether ``url`` is a recorded spec whose secrets were withheld."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and userinfo.split(":", 1)[-1] == WITHHELD and ":" in userinfo:
        return True
    return any(
        _is_secret_parameter(name) and value == WITHHELD
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )


def resolve_spec(spec: str, source: str = "claims") -> LedgerTarget:
    """Turn a claims spec into the URL to use and the spec a handle may record.

    Raises :class:`StorageConfigError` when a connection cannot be read or a
    withheld password cannot be found on this worker.
    """
    text = str(spec).strip()
    if "://" not in text:
        return _from_connection(text, source)
    if has_withheld_secret(text):
        return LedgerTarget(url=_url_with_secrets(text, source), recorded=text)
    return LedgerTarget(url=text, recorded=withhold_secrets(text))


def _url_with_secrets(recorded: str, source: str) -> str:
    from taskflow_exclusive.config import CLAIMS_URL_VARIABLE, read_variable

    configured = read_variable(CLAIMS_URL_VARIABLE)
    if configured is not None and "://" in configured and withhold_secrets(configured) == recorded:
        return configured
    found = (
        "is not set"
        if configured is None
        else f"names another ledger ({withhold_secrets(configured) if '://' in configured else configured})"
    )
    raise StorageConfigError(
        f"The claim ledger {recorded} needs a password, which handles never "
        f"carry, and this worker's Airflow Variable {CLAIMS_URL_VARIABLE!r} {found}. Set that "
        f"Variable (or AIRFLOW_VAR_{CLAIMS_URL_VARIABLE.upper()}) on every worker to the full URL, "
        "or produce with claims='<airflow connection id>' so that each worker reads the "
        "password from its own Airflow connection.",
        url=recorded,
        source=source,
    )


# -- Airflow connections ------------------------------------------------------------------------


def _connection(conn_id: str, source: str) -> Connection:
    """The Airflow connection ``conn_id``, asked of the host (which reads it once per process)."""
    if not conn_id or any(c in conn_id for c in "/\\ "):
        raise StorageConfigError(
            f"Claims ledger {conn_id!r} (from {source}) is neither a URL (redis://..., "
            "postgresql://..., sqlite:////path) nor an Airflow connection id.",
            url=conn_id,
            source=source,
        )
    try:
        return current_host().connection(conn_id)
    except StorageConfigError as exc:
        raise StorageConfigError(
            f"Claims ledger {conn_id!r} (from {source}): {exc.message} A claims ledger "
            "connection has conn_type redis, postgres, mysql or sqlite; or pass a URL.",
            url=conn_id,
            source=source,
        ) from exc


def connection_scheme(conn_id: str, source: str = "argument") -> str:
    """The ledger scheme an Airflow connection's ``conn_type`` selects (``redis``, ``postgresql``, ...)."""
    conn_type = str(_from_connection(conn_id, source).options.get("conn_type", ""))
    return "redis" if conn_type in REDIS_CONN_TYPES else scheme_of(SQL_CONN_TYPES[conn_type])


def _from_connection(conn_id: str, source: str) -> LedgerTarget:
    conn = _connection(conn_id, source)
    conn_type = str(conn.conn_type or "").lower()
    extra = dict(conn.extra_dejson or {})
    client: dict[str, Any] = {}
    if conn_type in REDIS_CONN_TYPES:
        url, client = _redis_client_arguments(conn, extra)
        options = {"prefix": extra["claims_prefix"]} if extra.get("claims_prefix") else {}
        for name in ("socket_timeout", "socket_connect_timeout"):
            if extra.get(name) is not None:
                options[name] = float(extra[name])
    elif conn_type in SQL_CONN_TYPES:
        url = _sql_url(conn, conn_type, extra)
        options = {"table": extra["claims_table"]} if extra.get("claims_table") else {}
        if extra.get("timeout") is not None:
            options["timeout"] = float(extra["timeout"])
    else:
        known = ", ".join(sorted(REDIS_CONN_TYPES | SQL_CONN_TYPES.keys()))
        raise StorageConfigError(
            f"Airflow connection {conn_id!r} (claims ledger, from {source}) has conn_type "
            f"{conn_type or 'unset'!r}; a claims ledger needs one of: {known}.",
            url=conn_id,
            source=source,
        )
    return LedgerTarget(
        url=url,
        recorded=conn_id,
        conn_id=conn_id,
        options={**options, "conn_type": conn_type},
        client=client,
    )


def _redis_client_arguments(conn: Connection, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``redis.Redis(...)`` arguments for a redis connection, and the URL that names it (no secrets)."""
    secure = str(extra.get("ssl", "")).lower() in ("1", "true", "yes")
    host = conn.host or "127.0.0.1"
    port = int(conn.port) if conn.port else 6379
    db = int(extra.get("db", conn.schema or 0) or 0)
    client = {"host": host, "port": port, "db": db, "ssl": secure}
    if conn.login:
        client["username"] = str(conn.login)
    if conn.password:
        client["password"] = str(conn.password)
    return f"{'rediss' if secure else 'redis'}://{host}:{port}/{db}", client


def _sql_url(conn: Connection, conn_type: str, extra: dict[str, Any]) -> str:
    from sqlalchemy.engine import URL

    driver = str(extra.get("sqlalchemy_scheme") or SQL_CONN_TYPES[conn_type])
    if conn_type == "sqlite":
        url = URL.create("sqlite", database=conn.host or conn.schema or None)
    else:
        url = URL.create(
            driver,
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or "127.0.0.1",
            port=int(conn.port) if conn.port else None,
            database=conn.schema or None,
        )
    return url.render_as_string(hide_password=False)  # in this process only; handles record conn_id


def query_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Split our own options (``names``) off a URL's query; return the rest of the URL and them."""
    parts = urlsplit(url)
    kept, ours = [], {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in names:
            ours[name] = unquote(value)
        else:
            kept.append((name, value))
    rest = _join(parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)
    return rest, ours


# -- one ledger per spec and process ------------------------------------------------------------

_opened: Memo[Any] = Memo()


def opened_once(kind: str, spec: str, build: Any) -> Any:
    """The ledger ``build()`` made for ``spec`` in this process, made on first use.

    Claims open the ledger on every call; connection pools, Airflow
    connection look-ups and table checks are paid once per process (a forked
    child opens its own).
    """
    return _opened.get((kind, spec), build)


def forget_opened() -> None:
    """Forget opened ledgers and connections (tests; after a configuration change)."""
    _opened.clear()
    current_host().forget()
