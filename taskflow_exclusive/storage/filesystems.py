"""Which fsspec filesystem a storage URL means, and where its credentials come from.

Accepted URLs::

    file:///srv/exclusive          local disk (or a plain absolute path)
    memory://scratch               fsspec's in-process memory filesystem
    s3://bucket/prefix             s3fs; credentials from the usual AWS chain
    s3://my_conn@bucket/prefix     s3fs with credentials from Airflow Connection ``my_conn``
    gs://my_conn@bucket/prefix     gcsfs, likewise (``gcs://`` is the same)
    <protocol>://...               any other installed fsspec protocol

A connection id in the URL works as in ``airflow.sdk.ObjectStoragePath``: when
an Airflow provider registers a filesystem for the scheme (the Amazon and
Google providers do), that provider builds it; otherwise the connection's
login, password and extras are mapped onto s3fs / gcsfs options here.
Credentials never appear in a URL: one that holds a password is refused,
because URLs end up in handles, XCom and logs.

Example::

    >>> loc = parse_storage_url("s3://my_conn@bucket/prefix")
    >>> (loc.protocol, loc.conn_id, loc.path)
    ('s3', 'my_conn', 'bucket/prefix')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from taskflow_exclusive.errors import StorageConfigError
from taskflow_exclusive.host import current_host
from taskflow_exclusive.memo import Memo

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from taskflow_exclusive.host import Connection

__all__ = ["StorageLocation", "filesystem_for", "parse_storage_url"]

_ALIASES = {"gcs": "gs", "s3a": "s3", "local": "file"}
_EXTRAS = {"s3": "taskflow-exclusive[s3]", "gs": "taskflow-exclusive[gcs]"}
_BUCKET_PROTOCOLS = frozenset({"s3", "gs", "abfs", "az", "oss", "r2"})


@dataclass(frozen=True)
class StorageLocation:
    """A parsed storage URL: protocol, optional Airflow connection id and a path.

    ``path`` is in the filesystem's own form (``bucket/key`` for object
    stores, ``/abs/path`` for local disk and memory).
    """

    protocol: str
    conn_id: str | None
    path: str
    source: str = "argument"

    def uri(self, path: str | None = None) -> str:
        """The URL of ``path`` (default: this location), with the connection id kept."""
        path = self.path if path is None else path
        conn = f"{self.conn_id}@" if self.conn_id else ""
        if self.protocol in ("file", "memory"):
            return f"{self.protocol}://{conn}{path}"
        return f"{self.protocol}://{conn}{path.lstrip('/')}"

    def child(self, *segments: str) -> StorageLocation:
        """A location below this one (segments must already be encoded)."""
        joined = "/".join([self.path.rstrip("/"), *segments])
        return StorageLocation(self.protocol, self.conn_id, joined, self.source)

    def same_filesystem(self, other: StorageLocation) -> bool:
        return (self.protocol, self.conn_id) == (other.protocol, other.conn_id)


def parse_storage_url(url: str, source: str = "argument") -> StorageLocation:
    """Parse ``url`` into a :class:`StorageLocation`, or raise :class:`StorageConfigError`.

    Refused, with the URL (password masked) and ``source`` in the message: anything but a
    ``str``; control, invisible or unpaired-surrogate characters; no scheme or a malformed
    one; fsspec URL chains (``a::b``); a query string or fragment; credentials; a port;
    ``.`` or ``..`` segments; a file:// URL that is not local and absolute; an object store
    URL without a valid bucket; archive, read-only and caching protocols (``zip://``,
    ``http://``, ``simplecache://``, ...); schemes whose fsspec driver is not installed.
    """
    text = _checked_text(url, source)
    parts = _split(text, source)
    protocol = _ALIASES.get(parts.scheme, parts.scheme)
    conn_id, host = _checked_netloc(text, source, protocol, parts.netloc)
    segments = [host, *parts.path.split("/")]
    if "." in segments or ".." in segments:
        raise _refused(
            text, source, "has '.' or '..' segments; write the folder it means (they are not resolved)"
        )
    _require_driver(protocol, _redact(text), source)
    if conn_id and protocol in ("file", "memory"):
        raise _refused(text, source, f"names connection {conn_id!r}, but {protocol}:// takes no credentials")
    path = _path_in(text, source, protocol, host, parts.path)
    return StorageLocation(protocol, conn_id, path.rstrip("/") or "/", source)


def _checked_text(url: object, source: str) -> str:
    """The URL's text, stripped; ``/abs/path`` becomes ``file:///abs/path``."""
    if not isinstance(url, str):
        raise _refused(repr(url)[:200], source, f"is of type {type(url).__name__}, not a string")
    text = url.strip()
    if not text.isprintable():
        raise _refused(text, source, "holds control characters, invisible characters or unpaired surrogates")
    if text.startswith("/"):
        text = "file://" + text
    if "://" not in text:
        raise _refused(
            text,
            source,
            "has no scheme. Use an absolute URL such as 'file:///data/exclusive', 's3://bucket/prefix' "
            "or 'gs://bucket/prefix'; a relative path would mean a different folder on every worker",
        )
    if "::" in text:
        raise _refused(text, source, "chains fsspec filesystems ('a::b://...'), which cannot hold values")
    if "?" in text or "#" in text:
        raise _refused(
            text,
            source,
            "holds a query string or fragment ('?...', '#...'), which would be dropped: options "
            "belong in an Airflow connection, and a '?' or '#' in a name is written %3F or %23",
        )
    return text


def _split(text: str, source: str) -> SplitResult:
    scheme = text.partition("://")[0].lower()
    if not _SCHEME.match(scheme):
        raise _refused(text, source, f"has no valid scheme ({scheme!r}). {_SUPPORTED}")
    if scheme in _REFUSED_PROTOCOLS:
        raise _refused(text, source, f"uses {scheme}://, {_REFUSED_PROTOCOLS[scheme]}. {_SUPPORTED}")
    try:
        return urlsplit(text)
    except ValueError as exc:  # e.g. an unbalanced '[' taken for an IPv6 address
        raise _refused(text, source, f"cannot be parsed ({exc})") from None


def _checked_netloc(text: str, source: str, protocol: str, netloc: str) -> tuple[str | None, str]:
    """``(conn_id, host)`` of a URL's ``[conn_id@]host``."""
    userinfo, _, host = netloc.rpartition("@")
    if ":" in userinfo:
        raise _refused(
            text,
            source,
            "carries credentials ('user:password@'). Credentials in a URL would be copied into "
            "handles, XCom and logs: put them in an Airflow Connection and write "
            f"{protocol}://<conn_id>@<bucket>/<prefix> instead",
        )
    conn_id = unquote(userinfo) or None
    if conn_id is not None and not _CONN_ID.match(conn_id):
        raise _refused(
            text,
            source,
            f"names connection {conn_id!r}, which is not a usable Airflow connection id here "
            "(letters, digits and _ # ! ( ) . -)",
        )
    if ":" in host or "[" in host or "]" in host:
        raise _refused(
            text,
            source,
            f"names a port or an address ({host!r}); storage URLs name a bucket or a path, and an "
            "endpoint goes in the Airflow connection's extras (endpoint_url)",
        )
    return conn_id, host


def _path_in(text: str, source: str, protocol: str, host: str, url_path: str) -> str:
    """The path in the filesystem's own form (``/abs/path``, ``bucket/key``)."""
    if protocol == "file":
        if host not in ("", "localhost"):
            raise _refused(
                text, source, f"names host {host!r}; file:// URLs must be local (file:///absolute/path)"
            )
        # literal, as fsspec reads it: stored names hold %-escapes of their own
        if not PurePosixPath(url_path).is_absolute():
            raise _refused(text, source, "is not an absolute path")
        return str(PurePosixPath(url_path))
    if protocol == "memory":
        return "/" + "/".join(p for p in (host, url_path.strip("/")) if p)
    if protocol in _BUCKET_PROTOCOLS and not host:
        raise _refused(text, source, f"has no bucket: write {protocol}://bucket/prefix")
    if protocol in _BUCKET_PROTOCOLS and not _BUCKET.match(host):
        raise _refused(
            text, source, f"names bucket {host!r}, which is not a bucket name (a-z, 0-9, '.', '_', '-')"
        )
    if "" in url_path.strip("/").split("/")[1:]:
        raise _refused(text, source, "has an empty segment ('//'): object stores keep it as a distinct key")
    return "/".join(p for p in (host, url_path.strip("/")) if p)


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_CONN_ID = re.compile(r"^[\w#!().-]{1,250}$", re.ASCII)
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,221}$")
_SUPPORTED = (
    "Supported: file:///absolute/path, memory://name (one process only), s3://[conn_id@]bucket/prefix, "
    "gs://[conn_id@]bucket/prefix; other writable stores with an installed fsspec driver "
    "(abfs://, az://, ...) work with claims kept in Redis or SQL."
)
_ARCHIVE = "an archive filesystem (read-only, not a place to store values)"
_READ_ONLY = "a read-only filesystem"
_WRAPPER = "a caching or wrapping filesystem whose writes are not atomic"
#: fsspec protocols that cannot hold values: refused before any driver is loaded.
_REFUSED_PROTOCOLS = {
    "zip": _ARCHIVE,
    "tar": _ARCHIVE,
    "libarchive": _ARCHIVE,
    "http": _READ_ONLY,
    "https": _READ_ONLY,
    "github": _READ_ONLY,
    "gist": _READ_ONLY,
    "git": _READ_ONLY,
    "reference": _READ_ONLY,
    "data": _READ_ONLY,
    "dvc": _READ_ONLY,
    "jlab": _READ_ONLY,
    "jupyter": _READ_ONLY,
    "simplecache": _WRAPPER,
    "filecache": _WRAPPER,
    "blockcache": _WRAPPER,
    "cached": _WRAPPER,
    "dir": _WRAPPER,
    "async_wrapper": _WRAPPER,
    "asyncwrapper": _WRAPPER,
    "generic": _WRAPPER,
    "dask": _WRAPPER,
}


def _refused(text: str, source: str, problem: str) -> StorageConfigError:
    shown = _redact(text)
    return StorageConfigError(f"Storage URL {shown!r} (from {source}) {problem}.", url=shown, source=source)


_filesystems: Memo[AbstractFileSystem] = Memo()


def filesystem_for(location: StorageLocation) -> AbstractFileSystem:
    """The fsspec filesystem for ``location`` (one instance per protocol and connection)."""
    return _filesystems.get((location.protocol, location.conn_id), lambda: _build_filesystem(location))


def _build_filesystem(location: StorageLocation) -> AbstractFileSystem:
    try:
        return _new_filesystem(location)
    except (TypeError, ValueError, ImportError, OSError) as exc:
        if isinstance(exc, StorageConfigError):
            raise
        # e.g. ftp:// or webhdfs:// (their driver wants a host argument), hdfs:// without a JVM
        raise StorageConfigError(
            f"Storage URL {location.uri()!r} (from {location.source}): the fsspec driver for "
            f"{location.protocol}:// could not be set up ({type(exc).__name__}: {exc}). {_SUPPORTED}",
            url=location.uri(),
            source=location.source,
        ) from exc


def _new_filesystem(location: StorageLocation) -> AbstractFileSystem:
    import fsspec

    if location.conn_id is None:
        options: dict[str, Any] = {"auto_mkdir": False} if location.protocol == "file" else {}
        if location.protocol == "s3":
            options["config_kwargs"] = dict(S3_CLIENT_CONFIG)
        return _bounded_retries(fsspec.filesystem(location.protocol, **options))

    provider_fs = current_host().filesystem(location.protocol, location.conn_id)
    if provider_fs is not None:
        return provider_fs
    options = _options_from_connection(location)
    return _bounded_retries(fsspec.filesystem(location.protocol, **options))


def _bounded_retries(fs: AbstractFileSystem) -> AbstractFileSystem:
    """Cap s3fs's own retry loop (it has no constructor argument for it; see S3_CLIENT_CONFIG)."""
    if "s3" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        fs.retries = S3FS_RETRIES
    return fs


def _options_from_connection(location: StorageLocation) -> dict[str, Any]:
    conn = _get_connection(location)
    extra = conn.extra_dejson or {}
    if location.protocol == "s3":
        options: dict[str, Any] = {}
        if conn.login:
            options["key"] = conn.login
        if conn.password:
            options["secret"] = conn.password
        if extra.get("aws_session_token"):
            options["token"] = extra["aws_session_token"]
        client_kwargs = {k: extra[k] for k in ("endpoint_url", "region_name") if extra.get(k)}
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        options["config_kwargs"] = {**S3_CLIENT_CONFIG, **(extra.get("config_kwargs") or {})}
        return options
    if location.protocol == "gs":
        return _gcs_options(location, extra)
    raise StorageConfigError(
        f"Storage URL {location.uri()} (from {location.source}) names Airflow connection "
        f"{location.conn_id!r}, but no installed Airflow provider registers a filesystem for "
        f"{location.protocol}:// and taskflow-exclusive only maps connections for s3:// and gs://. "
        "Install the provider for this storage, or configure credentials through the "
        "filesystem's own environment variables and drop the connection id.",
        url=location.uri(),
        source=location.source,
    )


# Timeouts and retries of s3fs filesystems built here, so that an unreachable server fails a
# claim promptly with ClaimStoreUnavailableError instead of hanging it. With the defaults
# (botocore's "legacy" mode, 5 attempts, nested inside s3fs's own loop of 5 retries, twice
# nested for reads) a claim against a frozen server (SIGSTOP) had not failed after 17 minutes.
# Here one retry layer remains, botocore's "standard" mode (backoff, retry quota; it retries
# connection errors, timeouts, throttling and 5xx once), and s3fs's loop makes a single
# attempt. Measured on SeaweedFS: a stopped server fails a claim in about 1 s, a frozen one in
# about 21 s (2 x read_timeout). read_timeout bounds the wait for each response chunk, not a
# whole transfer, so large values are unaffected. A connection's "config_kwargs" extra
# overrides these.
S3_CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"total_max_attempts": 2, "mode": "standard"},  # the first try and one retry
}
S3FS_RETRIES = 1  # attempts of s3fs's own retry loop (it has no constructor argument for it)


def _google_extra(extra: dict[str, Any], name: str) -> Any:
    """An extra of a Google connection, in the current or the old prefixed spelling."""
    value = extra.get(name)
    return value if value not in (None, "") else extra.get(f"extra__google_cloud_platform__{name}")


def _gcs_options(location: StorageLocation, extra: dict[str, Any]) -> dict[str, Any]:
    """gcsfs options from a Google connection: a service account key, a key file, or a token.

    ``token: "anon"`` (no credentials) is accepted only together with an
    ``endpoint_url`` (an emulator such as fake-gcs-server): against real GCS it
    could only fail later, or worse, silently read public data.
    """
    options: dict[str, Any] = {}
    for name in ("project", "endpoint_url"):
        value = _google_extra(extra, name)
        if value:
            options[name] = value
    keyfile_dict = _google_extra(extra, "keyfile_dict")
    key_path = _google_extra(extra, "key_path")
    token = _google_extra(extra, "token")
    where = f"Airflow connection {location.conn_id!r} (for {location.uri()}, from {location.source})"
    if keyfile_dict:
        if isinstance(keyfile_dict, str):
            try:
                keyfile_dict = json.loads(keyfile_dict)
            except ValueError:
                keyfile_dict = None
        if not isinstance(keyfile_dict, dict):
            raise StorageConfigError(
                f"The keyfile_dict extra of {where} is not a JSON object: paste the service "
                "account key file's JSON as it is, or use key_path.",
                url=location.uri(),
                source=location.source,
            )
        options["token"] = keyfile_dict
    elif key_path:
        if not os.path.isfile(key_path):
            # gcsfs would take a missing path for a raw OAuth token and fail later, obscurely.
            raise StorageConfigError(
                f"The key_path extra of {where} names {key_path!r}, which is not a file on this "
                "machine. Point it at the service account key file, or use keyfile_dict.",
                url=location.uri(),
                source=location.source,
            )
        options["token"] = key_path
    elif token:
        if token == "anon" and "endpoint_url" not in options:
            raise StorageConfigError(
                f"{where} asks for anonymous access (token 'anon') to real GCS, where "
                "taskflow-exclusive can neither write values nor record claims. Anonymous access "
                "is for emulators only: add an endpoint_url extra, or give credentials "
                "(keyfile_dict, key_path, or none for Google's default credentials).",
                url=location.uri(),
                source=location.source,
            )
        options["token"] = token
    return options


def _get_connection(location: StorageLocation) -> Connection:
    try:
        return current_host().connection(str(location.conn_id))
    except StorageConfigError as exc:
        raise StorageConfigError(
            f"Storage URL {location.uri()} (from {location.source}) names Airflow connection "
            f"{location.conn_id!r}: {exc.message}",
            url=location.uri(),
            source=location.source,
        ) from exc


def _require_driver(protocol: str, url: str, source: str) -> None:
    from fsspec.registry import get_filesystem_class, known_implementations

    try:
        get_filesystem_class(protocol)
    except ValueError:
        raise StorageConfigError(
            f"Storage URL {url!r} (from {source}) uses unknown scheme {protocol!r}. Known schemes "
            "include file, memory, s3, gs; any fsspec protocol whose driver is installed works.",
            url=url,
            source=source,
        ) from None
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        hint = (
            f"pip install '{extra}'"
            if extra
            else known_implementations.get(protocol, {}).get("err", "install its fsspec driver")
        )
        raise StorageConfigError(
            f"Storage URL {url!r} (from {source}) needs the fsspec driver for {protocol}://, "
            f"which is not installed: {hint}.",
            url=url,
            source=source,
            extra=extra,
        ) from exc


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` masked (it may not even parse as a URL)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, tail = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{separator}***@{tail}"
    return url
