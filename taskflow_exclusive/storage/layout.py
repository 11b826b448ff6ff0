"""Where each stored value, its manifest and its claim records live.

One value produces three kinds of object under the storage base URL::

    <base>/<dag_id>/<run_id>/<task_id>/<map_index>/try<N>-<32 hex>.<ext>      the value
    <base>/<dag_id>/<run_id>/<task_id>/<map_index>/try<N>-<32 hex>.manifest.json
    <base>/<dag_id>/<run_id>/<task_id>/<map_index>/try<N>-<32 hex>.claims/slot-<i>[.g<k>][.released].json

Claim records are never overwritten or deleted while the value lives (see
:mod:`taskflow_exclusive.claims.objectstore`): slot ``i`` is first held by
``slot-<i>.json`` (generation 0); releasing it creates the marker
``slot-<i>.released.json``, and the next holder creates ``slot-<i>.g1.json``,
and so on. Every name is created with the store's atomic create-if-absent.

Outside Airflow the folder is ``<base>/_local/<label>/`` and the stem has no
``try<N>-`` prefix. Every segment is percent-encoded down to
``[A-Za-z0-9._-]`` (run ids hold ``:`` and ``+``), ``.`` and ``..`` are
encoded too, and the stem is a fresh UUID, so two values never share a path.

Names are also how forged handles are refused: a handle whose URI does not
end in a stem of this shape is never followed.

Example::

    >>> encode_segment("scheduled__2026-11-24T09:00:00+00:00")
    'scheduled__2026-11-24T09%3A00%3A00%2B00%3A00'
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote

from taskflow_exclusive.errors import IntegrityError

__all__ = [
    "ObjectPaths",
    "claim_name",
    "decode_segment",
    "encode_segment",
    "new_stem",
    "parse_claim_name",
    "stem_try_number",
]

_STEM = re.compile(r"^(?:try(?P<try>[0-9]{1,6})-)?(?P<id>[0-9a-f]{32})$")
_CLAIM_NAME = re.compile(
    r"^slot-(?P<slot>0|[1-9][0-9]{0,8})(?:\.g(?P<generation>[1-9][0-9]{0,8}))?(?P<released>\.released)?\.json$"
)
_EXTENSION = re.compile(r"^[a-z0-9]{1,12}(?:\.[a-z0-9]{1,8})?$")
MANIFEST_SUFFIX = ".manifest.json"
CLAIMS_SUFFIX = ".claims"
LOCAL_FOLDER = "_local"


def encode_segment(text: str) -> str:
    """Percent-encode ``text`` into one path segment of ``[A-Za-z0-9._%-]``."""
    encoded = quote(str(text), safe="-_.")
    if encoded in ("", ".", ".."):
        encoded = encoded.replace(".", "%2E") or "%00"
    return encoded


def decode_segment(segment: str) -> str:
    """Inverse of :func:`encode_segment`."""
    return "" if segment == "%00" else unquote(segment)


def new_stem(try_number: int | None = None) -> str:
    """A name no other value will ever have (with the Airflow try number when known)."""
    unique = uuid.uuid4().hex
    return f"try{int(try_number)}-{unique}" if try_number is not None else unique


def claim_name(slot: int, generation: int = 0, *, released: bool = False) -> str:
    """The file name of a claim record (or its release marker) in a value's claims folder."""
    name = f"slot-{int(slot)}" + (f".g{int(generation)}" if generation else "")
    return name + (".released.json" if released else ".json")


def parse_claim_name(name: str) -> tuple[int, int, bool] | None:
    """``(slot, generation, released)`` for a name :func:`claim_name` makes, else ``None``.

    >>> parse_claim_name("slot-3.g2.released.json")
    (3, 2, True)
    >>> parse_claim_name("slot-03.json") is None
    True
    """
    match = _CLAIM_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match["slot"]), int(match["generation"] or 0), bool(match["released"])


def stem_try_number(name: str) -> int | None:
    """The try number of an entry a task's try wrote into its folder, else ``None``.

    Only exact names qualify: ``try<N>-<32 hex>`` followed by ``.<ext>`` (the
    value or its manifest) or ``.claims`` (its claim records). A user's
    ``try1-notes.txt`` is not ours and gives ``None``.

    >>> stem_try_number("try2-" + "ab" * 16 + ".manifest.json")
    2
    >>> stem_try_number("try1-notes.txt") is None
    True
    """
    stem, _, rest = name.partition(".")
    match = _STEM.fullmatch(stem)
    if match is None or not match["try"] or not (rest == CLAIMS_SUFFIX[1:] or _EXTENSION.fullmatch(rest)):
        return None
    return int(match["try"])


@dataclass(frozen=True)
class ObjectPaths:
    """The paths (in the filesystem's own form) that belong to one stored value."""

    folder: str
    stem: str
    extension: str
    #: Another set of claims on the same value (e.g. ``handoff/<dag>``), kept inside its claims folder.
    claims_scope: str | None = None

    @property
    def data(self) -> str:
        return f"{self.folder}/{self.stem}.{self.extension}"

    @property
    def manifest(self) -> str:
        return f"{self.folder}/{self.stem}{MANIFEST_SUFFIX}"

    @property
    def claims_folder(self) -> str:
        own = f"{self.folder}/{self.stem}{CLAIMS_SUFFIX}"
        return own if self.claims_scope is None else f"{own}/{encode_segment(self.claims_scope)}"

    def scoped(self, scope: str) -> ObjectPaths:
        """The paths of another set of claims on this value, in a subfolder of its claims folder.

        >>> ObjectPaths("b/f", "0" * 32, "bin").scoped("handoff/child").claim_record(0)[-34:]
        'claims/handoff%2Fchild/slot-0.json'
        """
        return ObjectPaths(self.folder, self.stem, self.extension, scope)

    def claim_record(self, slot: int, generation: int = 0) -> str:
        """The record of the ``generation``-th holder of ``slot``."""
        return f"{self.claims_folder}/{claim_name(slot, generation)}"

    def release_marker(self, slot: int, generation: int = 0) -> str:
        """Exists once the ``generation``-th holder of ``slot`` has been released."""
        return f"{self.claims_folder}/{claim_name(slot, generation, released=True)}"

    @property
    def try_number(self) -> int | None:
        match = _STEM.match(self.stem)
        return int(match["try"]) if match and match["try"] else None

    @classmethod
    def from_data_path(cls, path: str, *, uri: str) -> ObjectPaths:
        """Split a stored value's path, refusing any name this library would not write."""
        folder, _, name = path.rpartition("/")
        stem, _, extension = name.partition(".")
        if not folder or not _STEM.fullmatch(stem) or not _EXTENSION.fullmatch(extension):
            raise IntegrityError(
                f"{uri} is not a value written by taskflow-exclusive (its name does not match "
                "'<stem>.<ext>' with a 32-hex-digit stem). Handles are only followed to objects "
                "this library wrote; this one may have been forged or edited.",
                uri=uri,
                expected="<try<N>->32 hex digits>.<ext>",
                actual=name,
            )
        return cls(folder, stem, extension)
