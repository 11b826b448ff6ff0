"""Reading a handle from any form a person can copy: JSON, XCom envelope, reference row, UI text.

Where a handle is shown, it is shown differently, and an operator copies
whichever is in front of them. :func:`parse_handle` accepts each of these
(:data:`ACCEPTED_FORMS`), and nothing else:

``handle``
    the handle's own JSON, :meth:`ExclusiveHandle.to_json()
    <taskflow_exclusive.handle.ExclusiveHandle.to_json>`
    (``{"format": "taskflow-exclusive/handle/1", "uri": ...}``);
``envelope``
    Airflow's XCom serde envelope, as the REST API returns it and the
    metadata database stores it
    (``{"__classname__": "taskflow_exclusive.handle.ExclusiveHandle", "__version__": 1, "__data__": {...}}``);
``reference``
    the XCom row the ``ExclusiveXCom`` backend writes for an offloaded value
    (``{"__taskflow_exclusive__": "xcom-ref/1", "key": ..., "handle": {...}}``);
``ui``
    the text the Airflow UI (and the REST API with ``deserialize=true``)
    shows: ``taskflow_exclusive.handle.ExclusiveHandle@version=1(format='...', uri='...', ...)``;
``xcom entry``
    the REST API's XCom entry (``{"key": ..., "task_id": ..., "value": ...}``)
    whose ``value`` is one of the above.

Each form may also come as a JSON string holding it (as a page shows a
string value, quotes included). Whatever the form, the fields end in
:meth:`ExclusiveHandle.from_dict <taskflow_exclusive.handle.ExclusiveHandle.from_dict>`:
a form is only a wrapper, never a way around the checks a handle's JSON
gets. The UI text is read with :mod:`ast` as literals only (never evaluated).

Example::

    >>> from taskflow_exclusive.handle import ExclusiveHandle
    >>> handle = ExclusiveHandle(
    ...     uri="file:///tmp/v/a.json", serializer="json", size=2, digest="blake3:" + "0" * 64,
    ...     producer="etl/run/extract/-1", created_at="2026-01-01T00:00:00+00:00", host="h",
    ... )
    >>> parse_handle(ui_text(handle)) == parse_handle(handle.to_json()) == handle
    True
    >>> parse_handle("[1, 2]", where="a note")
    Traceback (most recent call last):
    taskflow_exclusive.errors.MalformedRecordError: Not a taskflow-exclusive handle in a note: it is ...
"""

from __future__ import annotations

import ast
import json
from typing import Any

from taskflow_exclusive.errors import MalformedRecordError
from taskflow_exclusive.handle import HANDLE_CLASS, ExclusiveHandle, _json_type, _shown

__all__ = ["ACCEPTED_FORMS", "envelope", "parse_handle", "reference_row", "ui_text"]

# What ExclusiveXCom (taskflow_exclusive.airflow.xcom) writes for an offloaded value; not imported
# from there: that module imports Airflow.
REFERENCE_MARKER = "__taskflow_exclusive__"
REFERENCE = "xcom-ref/1"

ACCEPTED_FORMS = (
    "the handle's JSON (ExclusiveHandle.to_json())",
    'the XCom envelope {"__classname__": "taskflow_exclusive.handle.ExclusiveHandle", ...}',
    'the ExclusiveXCom reference row {"__taskflow_exclusive__": "xcom-ref/1", ...}',
    "the Airflow UI's text taskflow_exclusive.handle.ExclusiveHandle@version=1(...)",
    "the REST API's XCom entry holding one of these as its value",
)

_FORMS = "; ".join(ACCEPTED_FORMS)
_NOT_A_HANDLE = "Not a taskflow-exclusive handle"
_UI_PREFIX = f"{HANDLE_CLASS}@version="
_MAX_TEXT = 1 << 20  # a handle is a few hundred bytes; a megabyte is something else
_XCOM_ENTRY_FIELDS = frozenset({"key", "value"})


def parse_handle(text: str | bytes, *, where: str | None = None) -> ExclusiveHandle:
    """The handle in ``text``, in any of :data:`ACCEPTED_FORMS`; else :class:`MalformedRecordError`.

    ``where`` names the source for messages (``"file 'h.json'"``). The error
    names the forms accepted and what was wrong; it never echoes more than
    the start of the text.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_a_handle(where, "it is not UTF-8 text") from None
    if not isinstance(text, str):
        raise _not_a_handle(where, f"it is a {type(text).__name__}, not text")
    if len(text) > _MAX_TEXT:
        raise _not_a_handle(where, f"it is {len(text)} characters long; a handle is far shorter")
    try:
        return _from_text(text.strip(), where, depth=0)
    except MalformedRecordError as exc:
        if exc.message.startswith(_NOT_A_HANDLE):
            raise
        # A form was recognised but its handle is not one: say so, and what is accepted.
        raise MalformedRecordError(
            f"{exc.message} Forms accepted: {_FORMS}.", kind="handle", where=exc.where, problem=exc.problem
        ) from None


def envelope(handle: ExclusiveHandle) -> dict[str, Any]:
    """The XCom serde envelope Airflow stores (and the REST API shows) for ``handle``."""
    return {
        "__classname__": HANDLE_CLASS,
        "__version__": ExclusiveHandle.__version__,
        "__data__": handle.serialize(),
    }


def reference_row(handle: ExclusiveHandle, key: str = "return_value") -> dict[str, Any]:
    """The XCom row ``ExclusiveXCom`` writes for a value it offloaded to ``handle``."""
    return {REFERENCE_MARKER: REFERENCE, "key": key, "handle": handle.to_dict()}


def ui_text(handle: ExclusiveHandle) -> str:
    """The text the Airflow UI shows for ``handle`` (Airflow's ``stringify`` of its envelope)."""
    fields = ", ".join(f"{name}={value!r}" for name, value in handle.serialize().items())
    return f"{_UI_PREFIX}{ExclusiveHandle.__version__}({fields})"


# --- reading -----------------------------------------------------------------------------------


def _from_text(text: str, where: str | None, depth: int) -> ExclusiveHandle:
    if text.startswith(_UI_PREFIX):
        return _from_ui_text(text, where)
    if not text:
        raise _not_a_handle(where, "it is empty")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        if "@version=" in text.partition("(")[0]:
            shown = text.partition("@")[0][:80]
            raise _not_a_handle(
                where, f"it is the UI text of a {shown!r}, not of an ExclusiveHandle"
            ) from None
        raise _not_a_handle(where, "it is neither JSON nor the UI's text") from None
    return _from_data(data, where, depth)


def _from_data(data: Any, where: str | None, depth: int) -> ExclusiveHandle:
    if isinstance(data, str) and depth < 2:  # a form inside a JSON string, quotes and all
        return _from_text(data.strip(), where, depth + 1)
    if isinstance(data, list):  # e.g. the XCom of a split=True task: one handle per item
        raise _not_a_handle(where, f"it is a JSON array of {len(data)} items; pass one handle at a time")
    if not isinstance(data, dict):
        raise _not_a_handle(where, f"it is a JSON {_json_type(data)}, not an object")
    if "format" in data:
        return ExclusiveHandle.from_dict(data, where=where)
    if "__classname__" in data:
        return _from_envelope(data, where)
    if REFERENCE_MARKER in data:
        return _from_reference(data, where)
    if data.keys() >= _XCOM_ENTRY_FIELDS and depth == 0:
        return _from_data(data["value"], where, depth + 1)
    return ExclusiveHandle.from_dict(data, where=where)  # refuses it, naming what is wrong


def _from_envelope(data: dict[str, Any], where: str | None) -> ExclusiveHandle:
    classname = data.get("__classname__")
    if classname != HANDLE_CLASS:
        raise _not_a_handle(
            where, f"it is Airflow's envelope of a {_shown(classname)}, not of an ExclusiveHandle"
        )
    unknown = sorted(str(k) for k in data.keys() - {"__classname__", "__version__", "__data__"})
    if unknown:
        raise _not_a_handle(where, f"its envelope has fields {unknown[:5]} Airflow never writes")
    inner = data.get("__data__")
    if not isinstance(inner, dict):
        raise _not_a_handle(where, f"its envelope's __data__ is a JSON {_json_type(inner)}, not an object")
    return ExclusiveHandle.deserialize(inner, data.get("__version__"), where=where)  # checks it all


def _from_reference(data: dict[str, Any], where: str | None) -> ExclusiveHandle:
    if data.get(REFERENCE_MARKER) != REFERENCE:
        found = _shown(data.get(REFERENCE_MARKER))
        raise _not_a_handle(
            where, f"it is an ExclusiveXCom row of kind {found}, not a reference ({REFERENCE!r})"
        )
    fields = set(data) - {REFERENCE_MARKER}
    if fields != {"key", "handle"}:
        raise _not_a_handle(
            where, f"its reference row has fields {sorted(map(str, fields))}, not ['handle', 'key']"
        )
    if not isinstance(data["key"], str) or not data["key"]:
        raise _not_a_handle(
            where, f"its reference row's key is {_shown(data['key'])}, not a non-empty string"
        )
    return ExclusiveHandle.from_dict(data["handle"], where=where)


def _from_ui_text(text: str, where: str | None) -> ExclusiveHandle:
    """``<class>@version=<n>(name=<literal>, ...)`` read as literals, then checked like any handle."""
    version_text, paren, rest = text[len(_UI_PREFIX) :].partition("(")
    if not (version_text.isdigit() and paren and rest.endswith(")")):
        raise _not_a_handle(where, "its UI text is cut short (it must end with ')')")
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        call = None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        unquoted = _unquoted_fields(rest[:-1])  # Airflow 3.1 shows the values without quotes
        if unquoted is None:
            raise _not_a_handle(where, "its UI text's fields are not name=value pairs")
        return ExclusiveHandle.deserialize(unquoted, int(version_text), where=where)  # checks it all
    fields: dict[str, Any] = {}
    for keyword in call.keywords:
        value = keyword.value
        if not (isinstance(value, ast.Constant) and isinstance(value.value, (str, int, type(None)))):
            raise _not_a_handle(where, f"its UI text's field {keyword.arg!r} is not a string, number or None")
        fields[str(keyword.arg)] = value.value
    return ExclusiveHandle.deserialize(fields, int(version_text), where=where)  # checks it all


_COMMON_FIELDS = (
    "uri",
    "serializer",
    "size",
    "producer",
    "created_at",
    "host",
    "compression",
    "max_claims",
    "claims",
)
# The orders ExclusiveHandle.to_dict writes: the digest last (after key_id and signature) since
# #13; before, the sha256 came right after the size.
_FIELD_ORDERS = (
    ("format", *_COMMON_FIELDS, "key_id", "signature", "digest", "sha256"),
    ("format", "uri", "serializer", "size", "sha256", *_COMMON_FIELDS[3:], "key_id", "signature"),
)
_NUMBERS = frozenset({"size", "max_claims"})


def _unquoted_fields(text: str) -> dict[str, Any] | None:
    """Airflow 3.1's UI text, ``format=...,uri=...,size=3,...``: fields in an order the handle writes.

    Each value runs to the next ``,<later field>=``; ``None`` is null, sizes are numbers.
    Anything out of order or unknown gives ``None`` (refused by the caller).
    """
    # A text in the other order can still parse, with one value swallowing the fields after
    # it: the order that finds the most fields is the one the text was written in.
    parsed = [fields for order in _FIELD_ORDERS if (fields := _fields_in_order(text, order)) is not None]
    return max(parsed, key=len, default=None)


def _fields_in_order(text: str, order: tuple[str, ...]) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    position, remaining = 0, list(order)
    while position < len(text):
        name, equals, _ = text[position:].partition("=")
        if not equals or name not in remaining:
            return None
        remaining = remaining[remaining.index(name) + 1 :]
        start = position + len(name) + 1
        ends = [i for i in (text.find(f",{later}=", start) for later in remaining) if i >= 0]
        end = min(ends, default=len(text))
        raw = text[start:end]
        if raw == "None":
            fields[name] = None
        elif name in _NUMBERS and raw.isdigit():
            fields[name] = int(raw)
        else:
            fields[name] = raw
        position = end + 1
    return fields or None


# --- messages ----------------------------------------------------------------------------------


def _not_a_handle(where: str | None, problem: str) -> MalformedRecordError:
    source = f" in {where}" if where else ""
    return MalformedRecordError(
        f"{_NOT_A_HANDLE}{source}: {problem}. Forms accepted: {_FORMS}.",
        kind="handle",
        where=where,
        problem=problem,
    )
