"""Cleanup removes only what this library provably wrote: exact names at their exact places.

The storage prefix may also hold a user's own files. Look-alikes (32 hex
digits, ``try1-`` stems, ``.claims`` folders, ``.x.<hex>.tmp`` names, a
``.taskflow-exclusive-probe/`` folder) at every depth must survive; real
leftovers, written through the library's own naming and Store, are removed.
A Hypothesis test checks every removal against an independent statement of
the layout.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import fsspec.compression  # registers the codecs in fsspec.utils.compressions
import fsspec.utils
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskflow_exclusive import ExclusiveOutput, publish
from taskflow_exclusive.formats.serializers import available_serializers, get_serializer
from taskflow_exclusive.identity import TaskInstanceId
from taskflow_exclusive.publishing import _folder, task_folder
from taskflow_exclusive.storage.atomic import _write_temporary
from taskflow_exclusive.storage.cleanup import (
    CLAIMS,
    DATA,
    PROBE,
    TEMPORARY,
    find_uncommitted,
    remove_uncommitted,
)
from taskflow_exclusive.storage.filesystems import parse_storage_url
from taskflow_exclusive.storage.layout import ObjectPaths, claim_name, new_stem
from taskflow_exclusive.storage.store import Store

NOW = timedelta(0)
MD5_OF_NOTHING = "d41d8cd98f00b204e9800998ecf8427e"  # 32 hex digits, not a UUID4


def _later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=2)


def _u() -> str:
    return uuid.uuid4().hex


def _plant(store: Store, relative: str, data: bytes = b"user data") -> str:
    path = f"{store.location.path}/{relative}"
    if store.is_local:
        store.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    store.fs.pipe_file(path, data)
    return path


def _lookalikes() -> dict[str, str]:
    """A user's files that resemble the layout but are not at its exact names and places."""
    u = _u()
    return {
        # the issue's own examples
        "issue: md5-named text one level down": f"userdata/{MD5_OF_NOTHING}.txt",
        "issue: hex-named csv two levels down": f"userdata/reports/{u}.csv",
        "issue: .x.<hex>.tmp in a user folder": f"userdata/.x.{u}.tmp",
        "issue: probe folder at a user's depth": f"userdata/.taskflow-exclusive-probe/{u}",
        # base level
        "base: hex json": f"{u}.json",
        "base: try1 json": f"try1-{u}.json",
        "base: tmp": f".x.{u}.tmp",
        "base: manifest tmp": f".{u}.manifest.json.{u}.tmp",
        "base: claims": f"{u}.claims/slot-0.json",
        "base: probe": f".taskflow-exclusive-probe/{u}",
        # 1..3 levels: no value folder is that shallow (outside _local)
        "depth 1: hex bin": f"a/{u}.bin",
        "depth 1: claims": f"a/{u}.claims/slot-0.json",
        "depth 2: try1 json": f"a/b/try1-{u}.json",
        "depth 2: manifest tmp": f"a/b/.{u}.manifest.json.{u}.tmp",
        "depth 3: try1 json": f"a/b/c/try1-{u}.json",
        "depth 3: probe": f"a/b/c/.taskflow-exclusive-probe/{u}",
        "depth 3: claims": f"a/b/c/try1-{u}.claims/slot-0.json",
        # 4 levels: the task folder's depth, but not its exact form
        "depth 4: map index not an integer": f"a/b/c/d/try1-{u}.json",
        "depth 4: map index with a leading zero": f"a/b/c/01/try1-{u}.json",
        "depth 4: map index below -1": f"a/b/c/-2/try1-{u}.json",
        "depth 4: no try prefix": f"a/b/c/0/{u}.json",
        "depth 4: try0": f"a/b/c/0/try0-{u}.json",
        "depth 4: wrong extension": f"a/b/c/0/try1-{u}.exe",
        "depth 4: extension with a suffix": f"a/b/c/0/try1-{u}.json.bak",
        "depth 4: compression that is an archive": f"a/b/c/0/try1-{u}.json.zip",
        "depth 4: upper-case hex": f"a/b/c/0/try1-{u.upper()}.json",
        "depth 4: md5 stem": f"a/b/c/0/try1-{MD5_OF_NOTHING}.json",
        "depth 4: folder not as the library encodes it": f"a/b c/c/0/try1-{u}.json",
        "depth 4: user tmp": f"a/b/c/0/.x.{u}.tmp",
        "depth 4: tmp of a data name": f"a/b/c/0/.try1-{u}.json.{u}.tmp",
        "depth 4: claims record with a bad name": f"a/b/c/0/try1-{u}.claims/slot-01.json",
        "depth 4: note in a claims folder": f"a/b/c/0/try1-{u}.claims/notes.txt",
        "depth 4: folder in a claims folder": f"a/b/c/0/try1-{u}.claims/sub/slot-0.json",
        "depth 4: user tmp in a claims folder": f"a/b/c/0/try1-{u}.claims/.x.{u}.tmp",
        "depth 4: probe with an extension": f"a/b/c/0/.taskflow-exclusive-probe/{u}.txt",
        "depth 4: folder in a probe folder": f"a/b/c/0/.taskflow-exclusive-probe/x/{u}",
        # 5..7 levels
        "depth 5: try1 json": f"a/b/c/0/e/try1-{u}.json",
        "depth 5: probe": f"a/b/c/0/e/.taskflow-exclusive-probe/{u}",
        "depth 5: claims": f"a/b/c/0/e/try1-{u}.claims/slot-0.json",
        "depth 6: not an xcom folder": f"a/b/c/0/x/k/try1-{u}.json",
        "depth 6: xcom with a wrong extension": f"a/b/c/0/xcom/k/{u}.exe",
        "depth 7: below an xcom key": f"a/b/c/0/xcom/k/z/{u}.json",
        # inside _local
        "_local: directly inside": f"_local/{u}.json",
        "_local: try prefix (never written outside Airflow)": f"_local/l/try1-{u}.json",
        "_local: one level too deep": f"_local/l/sub/{u}.json",
        "_local: wrong extension": f"_local/l/{u}.xyz",
        "_local: md5 stem": f"_local/l/{MD5_OF_NOTHING}.txt",
        "_local: user tmp": f"_local/l/.x.{u}.tmp",
        "_local: md5 claims": f"_local/l/{MD5_OF_NOTHING}.claims/slot-0.json",
        "_local: claims record with a suffix": f"_local/l/{u}.claims/slot-0.json.bak",
        "_local: a newline after the stem": f"_local/l/{u}\n.json",
        "_local: a newline after a claim name": f"_local/l/{u}.claims/slot-0.json\n",
        "depth 4: a newline after the map index": f"a/b/c/0\n/try1-{u}.json",
    }


# --- look-alikes survive ----------------------------------------------------------------------


@pytest.mark.parametrize("relative", list(_lookalikes().values()), ids=list(_lookalikes()))
def test_a_users_lookalike_file_survives_cleanup(file_url, relative):
    store = Store.from_url(file_url)
    planted = _plant(store, relative)
    assert find_uncommitted(file_url, older_than=NOW, now=_later()) == []
    assert remove_uncommitted(file_url, older_than=NOW, now=_later()) == []
    assert store.exists(planted)


@pytest.mark.parametrize("storage", ["memory", "s3"])
def test_lookalikes_survive_on_every_store_while_real_leftovers_go(request, storage):
    url = request.getfixturevalue(f"{storage}_url")
    store = Store.from_url(url)
    planted = [_plant(store, relative) for relative in _lookalikes().values()]
    leftover = _data_without_manifest(store, _task(map_index=2))
    removed = remove_uncommitted(url, older_than=NOW, now=_later())
    assert [r.path for r in removed] == [leftover]
    assert [path for path in planted if not store.exists(path)] == []


def test_a_user_probe_folder_on_s3_survives_and_the_librarys_own_probe_goes(s3_url):
    store = Store.from_url(s3_url)
    folder = task_folder(store, _task())
    ours = f"{folder}/.taskflow-exclusive-probe/{_u()}"  # as atomic.ensure_create_is_atomic names it
    store.fs.pipe_file(ours, b"first")
    users = [
        _plant(store, f"userdata/.taskflow-exclusive-probe/{_u()}"),
        _plant(store, f".taskflow-exclusive-probe/{_u()}"),
        _plant(store, f"a/b/c/0/e/.taskflow-exclusive-probe/{_u()}"),
    ]
    removed = remove_uncommitted(s3_url, older_than=NOW, now=_later())
    assert [(r.kind, r.path) for r in removed] == [(PROBE, ours)]
    assert all(store.exists(path) for path in users)


def test_no_probe_is_removed_from_local_disk_where_the_library_never_probes(file_url):
    store = Store.from_url(file_url)
    planted = _plant(store, f"_local/l/.taskflow-exclusive-probe/{_u()}")
    assert remove_uncommitted(file_url, older_than=NOW, now=_later()) == []
    assert store.exists(planted)


def test_the_cli_keeps_lookalikes_and_explains_each_removal(file_url):
    from tests.test_cli import _run

    store = Store.from_url(file_url)
    planted = [_plant(store, relative) for relative in _lookalikes().values()]
    leftover = _data_without_manifest(store, _task())
    dry = _run("cleanup", file_url, "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove data without manifest: {store.uri(leftover)} matches " in dry.stdout
    assert "<dag_id>/<run_id>/<task_id>/<map_index>/try<N>-<uuid4 hex>.<ext>" in dry.stdout
    assert "1 leftover(s)" in dry.stdout
    done = _run("cleanup", file_url, "--older-than", "0s")
    assert done.returncode == 0, done.stderr
    assert f"removed data without manifest: {store.uri(leftover)}" in done.stdout
    assert not store.exists(leftover)
    assert [path for path in planted if not store.exists(path)] == []


# --- real leftovers, made with the library's own names, go ------------------------------------


def _task(map_index: int = -1, try_number: int | None = 1) -> TaskInstanceId:
    return TaskInstanceId("etl", "scheduled__2026-01-01T00:00:00+00:00", "extract", map_index, try_number)


def _data_without_manifest(
    store: Store, task: TaskInstanceId | None, extension: str = "json", *subfolder: str, label: str = "l"
) -> str:
    """Data written by the Store at a path the library names, whose manifest never came."""
    folder = _folder(store, task, label, subfolder)
    paths = ObjectPaths(folder, new_stem(task.try_number if task else None), extension)
    store.write_stream(paths.data, lambda file: file.write(b'{"partial": '))
    return paths.data


def _data_path(handle) -> ObjectPaths:
    path = parse_storage_url(handle.uri, source="handle").path
    return ObjectPaths.from_data_path(path, uri=handle.uri)


def test_uncommitted_data_in_every_layout_is_removed(file_url):
    store = Store.from_url(file_url)
    expected = {
        _data_without_manifest(store, _task()),
        _data_without_manifest(store, _task(map_index=0, try_number=3), "parquet"),
        _data_without_manifest(store, _task(map_index=17), "json.gz"),
        _data_without_manifest(store, _task(try_number=None), "pkl", "xcom", "return_value"),
        _data_without_manifest(store, _task(try_number=2), "bin", "xcom", "my key"),
        _data_without_manifest(store, None, "txt"),
        _data_without_manifest(store, None, "npy.bz2", label="a label/with:odd+chars"),
    }
    removed = remove_uncommitted(file_url, older_than=NOW, now=_later())
    assert {(r.kind, r.path) for r in removed} == {(DATA, path) for path in expected}
    assert not any(store.exists(path) for path in expected)


def test_committed_values_in_every_layout_and_their_claims_are_kept(file_url):
    output = ExclusiveOutput(storage=file_url)
    handles = [
        output.publish({"n": 1}, task=_task()),
        output.publish({"n": 2}, task=_task(try_number=None), subfolder=("xcom", "return_value")),
        output.publish({"n": 3}, label="kept"),
    ]
    for handle in handles:
        handle.claim(consumer_id="holder")
    assert find_uncommitted(file_url, older_than=NOW, now=_later()) == []
    for handle in handles:
        assert handle.claim(consumer_id="holder") is not None


def test_claims_of_a_value_being_purged_are_kept_until_its_data_is_gone_too(file_url):
    store = Store.from_url(file_url)
    handle = ExclusiveOutput(storage=file_url).publish({"n": 1}, task=_task())
    handle.claim(consumer_id="holder")
    paths = _data_path(handle)
    store.remove([paths.manifest])  # a purge interrupted after its first step
    found = remove_uncommitted(file_url, older_than=NOW, now=_later())
    assert [(r.kind, r.path) for r in found] == [(DATA, paths.data)]
    assert store.exists(paths.claim_record(0))  # the data was still there when listed
    found = remove_uncommitted(file_url, older_than=NOW, now=_later())
    assert [(r.kind, r.path) for r in found] == [(CLAIMS, paths.claim_record(0))]


def test_claims_with_data_but_no_manifest_are_kept(file_url):
    store = Store.from_url(file_url)
    handle = ExclusiveOutput(storage=file_url).publish({"n": 1}, label="purging")
    handle.claim(consumer_id="holder")
    paths = _data_path(handle)
    store.remove([paths.manifest])
    found = find_uncommitted(file_url, older_than=NOW, now=_later())
    assert [(f.kind, f.path) for f in found] == [(DATA, paths.data)]


def test_claims_of_a_purged_value_are_removed(file_url):
    store = Store.from_url(file_url)
    handle = ExclusiveOutput(storage=file_url).publish({"n": 1}, task=_task(map_index=4))
    handle.claim(consumer_id="holder")
    paths = _data_path(handle)
    store.remove([paths.manifest, paths.data])  # a purge killed before it reached the claims
    found = remove_uncommitted(file_url, older_than=NOW, now=_later())
    assert [(r.kind, r.path) for r in found] == [(CLAIMS, paths.claim_record(0))]
    assert "slot-<i>[.g<k>][.released].json" in found[0].describe()


def test_claims_in_an_xcom_folder_are_never_removed(file_url, monkeypatch):
    """An inline XCom's claims have no data object by design: nothing proves they are orphans."""
    from taskflow_exclusive.airflow import xcom

    monkeypatch.setenv("AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL", file_url)
    where = xcom._Coordinates("etl", "manual__1", "extract", -1, "return_value")
    xcom._claim_inline(where, {"rows": 3}, "loader")
    store = Store.from_url(file_url)
    records = [p for p in store.fs.find(store.location.path) if "/xcom/" in p]
    assert records and all(".claims/" in p for p in records)
    assert remove_uncommitted(file_url, older_than=NOW, now=_later()) == []
    assert all(store.exists(p) for p in records)


def test_temporary_files_are_removed_only_with_the_names_atomic_writes_give_them(file_url):
    store = Store.from_url(file_url)
    folder = store.location.child("_local", "t").path
    stem = new_stem()
    os.makedirs(f"{folder}/{stem}.claims")
    ours = {
        _write_temporary(folder, f"{stem}.manifest.json", b"{}"),
        _write_temporary(f"{folder}/{stem}.claims", claim_name(0), b"{}"),
        _write_temporary(f"{folder}/{stem}.claims", claim_name(2, 3, released=True), b"{}"),
    }
    users = {
        _write_temporary(folder, "notes.txt", b"mine"),
        _write_temporary(folder, f"{stem}.json", b"mine"),
        _write_temporary(f"{folder}/{stem}.claims", "slot-00.json", b"mine"),
    }
    removed = remove_uncommitted(file_url, older_than=NOW, now=_later())
    assert {(r.kind, r.path) for r in removed} == {(TEMPORARY, path) for path in ours}
    assert all(store.exists(path) for path in users)


# --- every removal is a path the layout defines (Hypothesis) ----------------------------------

UUID4S = [
    "7f3c2a9e51d84b0c9a6e3d2f1b0c4e5a",
    "0c1d2e3f40514a6b8c7d8e9fa0b1c2d3",
    "e4b1c9d27a3f4e08b6d5c3a2f1e0d9c8",
]
HEXES = [*UUID4S, MD5_OF_NOTHING]


def _is_uuid4_hex(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{32}", text) is not None and text[12] == "4" and text[16] in "89ab"


def _is_segment(text: str) -> bool:
    """One path segment exactly as the library percent-encodes a dag id, run id, label, ..."""
    if text in ("%00", "%2E", "%2E%2E"):  # the encodings of "", "." and ".."
        return True
    return text not in ("", ".", "..") and quote(unquote(text), safe="-_.") == text


def _is_map_index(text: str) -> bool:
    return text in ("-1", "0") or (re.fullmatch(r"[1-9][0-9]*", text) is not None)


def _value_folder(parts: list[str]) -> str | None:
    """``task``, ``xcom`` or ``local`` for the three folders values are written to, else None."""
    if len(parts) == 2 and parts[0] == "_local" and _is_segment(parts[1]):
        return "local"
    if len(parts) in (4, 6) and all(_is_segment(p) for p in parts[:3]) and _is_map_index(parts[3]):
        if len(parts) == 4:
            return "task"
        if parts[4] == "xcom" and _is_segment(parts[5]):
            return "xcom"
    return None


def _is_stem(text: str, folder: str) -> bool:
    if folder == "local":
        return _is_uuid4_hex(text)
    number, dash, rest = text.partition("-")
    with_try = dash == "-" and re.fullmatch(r"try[1-9][0-9]{0,5}", number) is not None and _is_uuid4_hex(rest)
    return with_try or (folder == "xcom" and _is_uuid4_hex(text))


def _is_claim_name(name: str) -> bool:
    return re.fullmatch(r"slot-(0|[1-9][0-9]*)(\.g[1-9][0-9]*)?(\.released)?\.json", name) is not None


def _is_extension(text: str) -> bool:
    # The only part taken from the registries: the serializers' extensions and fsspec's codec suffixes.
    serializers = {get_serializer(name).extension for name in available_serializers()}
    codecs = {ext for ext, codec in fsspec.utils.compressions.items() if codec != "zip"}
    base, dot, codec = text.partition(".")
    return base in serializers and (codec in codecs if dot else True)


def _temporary_of(name: str) -> str | None:
    """``target`` for ``.<target>.<uuid4 hex>.tmp`` (how atomic local writes name their temporary)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    inner = name[1:-4]
    return inner[:-33] if inner[-33:-32] == "." and _is_uuid4_hex(inner[-32:]) else None


def _may_remove_in_value_folder(name: str, kind: str, siblings: set[str], local: bool) -> bool:
    stem, dot, extension = name.partition(".")
    if dot and _is_stem(stem, kind) and _is_extension(extension):
        return f"{stem}.manifest.json" not in siblings  # data without its manifest
    target = _temporary_of(name) or ""
    return (
        local and target.endswith(".manifest.json") and _is_stem(target.removesuffix(".manifest.json"), kind)
    )


def _may_remove_in_subfolder(middle: str, name: str, kind: str, siblings: set[str], local: bool) -> bool:
    if middle == ".taskflow-exclusive-probe":
        return not local and _is_uuid4_hex(name)  # probes: object stores only
    stem = middle.removesuffix(".claims")
    if middle == stem or not _is_stem(stem, kind):
        return False
    target = _temporary_of(name)
    if target is not None:
        return local and _is_claim_name(target)
    value_gone = not any(s.startswith(f"{stem}.") for s in siblings)
    return kind != "xcom" and _is_claim_name(name) and value_gone


def may_remove(relative: str, present: set[str], local: bool = True) -> bool:
    """Whether cleanup may remove ``relative`` (under the base), given every path present.

    ``local``: local disk (temporary files, no probes) or an object store (probes, no temporaries).
    """
    parts = relative.split("/")
    for depth in (1, 2):  # the value folder holds the file itself, or a claims/probe folder holding it
        folder_parts, inside = parts[:-depth], parts[-depth:]
        kind = _value_folder(folder_parts)
        if kind is None:
            continue
        prefix = "/".join(folder_parts) + "/"
        siblings = {p[len(prefix) :] for p in present if p.startswith(prefix) and "/" not in p[len(prefix) :]}
        if depth == 1:
            return _may_remove_in_value_folder(inside[0], kind, siblings, local)
        return _may_remove_in_subfolder(inside[0], inside[1], kind, siblings, local)
    return False


_SEGMENTS = st.sampled_from(
    ["a", "etl", "_local", "xcom", "k", "-1", "0", "7", "01", "-2", ".", "..", "%2E", "%41", "b c", "x.y"]
) | st.text(alphabet="ab0123456789.-_%", min_size=1, max_size=5)
_HEX_RUNS = st.sampled_from([*UUID4S, *UUID4S, MD5_OF_NOTHING, UUID4S[0].upper(), UUID4S[1][:31]])
_STEMS = st.builds(
    lambda prefix, hexes: prefix + hexes,
    st.sampled_from(["", "", "try1-", "try1-", "try12-", "try0-", "try01-", "x"]),
    st.one_of(
        _HEX_RUNS, _HEX_RUNS, _HEX_RUNS, st.text(alphabet="0123456789abcdefABCDEF", min_size=30, max_size=33)
    ),
)
_SUFFIXES = st.sampled_from(
    [
        *(".json", ".bin", ".pkl", ".json.gz", ".npy.bz2", ".manifest.json", ".manifest.json", ".txt"),
        *(".csv", ".exe", ".json.zip", ".json.bak", ".manifest.json.bak", "", ".", ".gz", ".json.", ".tmp"),
    ]
)
_CLAIM_NAMES = st.sampled_from(
    [
        *("slot-0.json", "slot-1.g2.released.json", "slot-0.released.json", "slot-01.json", "slot-0.g0.json"),
        *("slot-0.json.bak", "notes.txt", "slot-0"),
    ]
)


@st.composite
def _names(draw) -> str:
    """A file name, or ``middle/name`` inside a claims or probe folder."""
    stem = draw(_STEMS)
    hexes = draw(st.sampled_from(HEXES))
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return stem + draw(_SUFFIXES)
    if choice == 1:
        return f".{stem}{draw(_SUFFIXES)}.{hexes}.tmp"
    if choice == 2:
        return f"{stem}.claims/{draw(_CLAIM_NAMES)}"
    if choice == 3:
        return f"{stem}.claims/.{draw(_CLAIM_NAMES)}.{hexes}.tmp"
    if choice == 4:
        return f".taskflow-exclusive-probe/{draw(st.sampled_from([hexes, stem, hexes + '.txt']))}"
    return draw(st.sampled_from([f".x.{hexes}.tmp", "notes.txt", f"{hexes}", f"{stem}.claims"]))


_GOOD_SEGMENTS = st.sampled_from(["etl", "r", "t_1", "k", "run%3A1", "%2E", "%00", "a.b"])
_MAP_INDEXES = st.sampled_from(["-1", "0", "3", "12"])


@st.composite
def _well_formed_names(draw, stem: str) -> str:
    """A name the library writes for the value ``stem`` (data, manifest, claims, temporaries)."""
    hexes = draw(st.sampled_from(UUID4S))
    claim = draw(st.sampled_from(["slot-0.json", "slot-1.g2.released.json", "slot-0.released.json"]))
    return draw(
        st.sampled_from(
            [
                *(f"{stem}.json", f"{stem}.pkl", f"{stem}.json.gz", f"{stem}.manifest.json"),
                *(f"{stem}.claims/{claim}", f".{stem}.manifest.json.{hexes}.tmp"),
                *(f"{stem}.claims/.{claim}.{hexes}.tmp", f".taskflow-exclusive-probe/{hexes}"),
            ]
        )
    )


_STEM_FOR = {  # a stem the library writes in each folder
    "task": st.builds(lambda n, h: f"try{n}-{h}", st.sampled_from([1, 2, 15]), st.sampled_from(UUID4S)),
    "xcom": st.builds(lambda p, h: p + h, st.sampled_from(["", "try3-"]), st.sampled_from(UUID4S)),
    "local": st.sampled_from(UUID4S),
}


@st.composite
def _trees(draw) -> set[str]:
    """Files sharing a folder (so manifests, data and claims of one stem meet), plus a few elsewhere."""
    segment = draw(st.sampled_from([_GOOD_SEGMENTS, _GOOD_SEGMENTS, _SEGMENTS]))  # exact ones, or anything
    folder = draw(
        st.one_of(
            st.lists(_SEGMENTS, max_size=7),
            st.tuples(segment, segment, segment, _MAP_INDEXES | _SEGMENTS).map(list),
            st.tuples(segment, segment, segment, _MAP_INDEXES, st.just("xcom") | _SEGMENTS, segment).map(
                list
            ),
            st.tuples(st.just("_local") | _SEGMENTS, segment).map(list),
        )
    )
    kind = draw(st.sampled_from(sorted(_STEM_FOR)))
    stem = draw(_STEM_FOR[kind])  # well formed for one kind of folder: maybe this one, maybe not
    names = draw(
        st.lists(st.one_of(_names(), _well_formed_names(stem), _well_formed_names(stem)), max_size=6)
    )
    elsewhere = draw(
        st.lists(st.builds(lambda f, n: [*f, n], st.lists(_SEGMENTS, max_size=6), _names()), max_size=3)
    )
    paths = {"/".join([*folder, name]) for name in names} | {"/".join(p) for p in elsewhere}
    # Drop what a real filesystem cannot hold: '.'/'..' segments and a name that is also a folder.
    paths = {p for p in paths if not {".", ".."} & set(p.split("/"))}
    return {p for p in paths if not any(other.startswith(p + "/") for other in paths)}


_EXAMPLES = [
    {f"etl/r/t/0/try1-{UUID4S[0]}.json", f"userdata/{MD5_OF_NOTHING}.txt"},
    {f"_local/l/{UUID4S[1]}.claims/slot-0.json", f"_local/l/{UUID4S[2]}.json.gz"},
    {f"e/r/t/-1/xcom/k/{UUID4S[0]}.claims/slot-0.json", f"e/r/t/-1/xcom/k/try2-{UUID4S[1]}.pkl"},
    {f"e/r/t/3/.taskflow-exclusive-probe/{UUID4S[0]}", f"e/r/.taskflow-exclusive-probe/{UUID4S[1]}"},
]


def _check_removals_against_the_layout(url: str, tree: set[str], local: bool) -> None:
    store = Store.from_url(url)
    base = store.location.path.rstrip("/")
    for relative in tree:
        _plant(store, relative, b"x")
    removed = {r.path.removeprefix(base + "/") for r in remove_uncommitted(url, older_than=NOW, now=_later())}
    assert removed <= tree
    assert {p for p in removed if not may_remove(p, tree, local)} == set()  # never beyond the layout
    assert {p for p in tree if may_remove(p, tree, local)} - removed == set()  # and every leftover in it
    assert all(store.exists(f"{base}/{p}") for p in tree - removed)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees())
@example(_EXAMPLES[0])
@example(_EXAMPLES[1])
@example(_EXAMPLES[2])
@example(_EXAMPLES[3])
def test_cleanup_removes_nothing_the_layout_does_not_define_on_local_disk(tree):
    base = Path(tempfile.mkdtemp(prefix="tfx-cleanup-"))
    try:
        _check_removals_against_the_layout(base.as_uri(), tree, local=True)
    finally:
        shutil.rmtree(base)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree=_trees())
@example(tree=_EXAMPLES[3])
def test_cleanup_removes_nothing_the_layout_does_not_define_on_s3(s3_url, tree):
    _check_removals_against_the_layout(f"{s3_url}/{_u()}", tree, local=False)


def test_the_layout_statement_used_as_oracle_accepts_what_the_library_writes(file_url):
    store = Store.from_url(file_url)
    written = [
        _data_without_manifest(store, _task()),
        _data_without_manifest(store, _task(try_number=None), "json", "xcom", "return_value"),
        _data_without_manifest(store, None, "txt", label="a b"),
    ]
    base = store.location.path
    assert all(may_remove(os.path.relpath(p, base), set()) for p in written)
    assert not may_remove(f"userdata/{MD5_OF_NOTHING}.txt", set())
    assert publish  # the public one-liner writes the same local layout (see test_cleanup.py)
