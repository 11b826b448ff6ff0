"""Everything that crosses a trust boundary is refused with an ExclusiveError, never anything else.

Handles, manifests, XCom rows, storage URLs and command-line arguments come from
XCom, storage, Airflow Variables and people. Each is fuzzed with Hypothesis:
arbitrary text, arbitrary JSON values, and mutations of a valid record (a field
replaced by any JSON value, dropped, or an extra one added). The property: a
valid input works, anything else raises a precise :class:`ExclusiveError`
subclass, and a refused claim records nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from taskflow_exclusive import ExclusiveHandle, ExclusiveOutput, publish
from taskflow_exclusive.claims.base import MAX_CLAIMS_LIMIT
from taskflow_exclusive.errors import (
    ExclusiveError,
    IntegrityError,
    InvalidArgumentError,
    MalformedRecordError,
    StorageConfigError,
)
from taskflow_exclusive.identity import TaskInstanceId
from taskflow_exclusive.storage.filesystems import parse_storage_url

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI = Path(sys.executable).parent / "taskflow-exclusive"

DEFAULTS = {"compression": None, "max_claims": 1, "claims": None}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_handle_dicts = st.fixed_dictionaries(
    {
        "format": st.just(ExclusiveHandle.FORMAT),
        "uri": st.text("0123456789abcdef", min_size=32, max_size=32).map(
            lambda s: f"memory:///fuzz/{s}.json"
        ),
        "serializer": st.sampled_from(["json", "pickle", "bytes", "text"]),
        "size": st.integers(0, 2**63),
        "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
        "producer": st.text(max_size=20),
        "created_at": st.text(max_size=20),
        "host": st.text(max_size=20),
        "compression": st.none() | st.sampled_from(["gzip", "zstd"]),
        "max_claims": st.integers(1, MAX_CLAIMS_LIMIT),
        "claims": st.none() | st.text(min_size=1, max_size=20),
    }
)


def _in_either_digest_form(drawn: tuple[dict, bool]) -> dict:
    """A handle of before #13 (``sha256``), or one written now (``digest: blake3:...``)."""
    data, current = drawn
    if current:
        data = {**data, "digest": "blake3:" + data["sha256"]}
        del data["sha256"]
    return data


valid_handle_dicts = st.tuples(_handle_dicts, st.booleans()).map(_in_either_digest_form)


@st.composite
def mutated(draw, valid: st.SearchStrategy[dict]) -> dict:
    """A valid record with one to three fields replaced by any JSON value, dropped, or added."""
    data = dict(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            data[draw(st.sampled_from(sorted(data) or ["uri"]))] = draw(json_values)
        elif action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        else:
            data[draw(st.text(max_size=10))] = draw(json_values)
    return data


# --- handles -----------------------------------------------------------------------------------


@FUZZ
@given(st.text() | st.binary())
def test_from_json_of_arbitrary_text_or_bytes_is_a_malformed_record(text):
    with pytest.raises(MalformedRecordError) as refused:
        ExclusiveHandle.from_json(text)
    assert refused.value.kind == "handle" and refused.value.problem


@FUZZ
@given(json_values)
def test_from_dict_of_an_arbitrary_json_value_is_a_malformed_record(value):
    with pytest.raises(MalformedRecordError):
        ExclusiveHandle.from_dict(value)


@FUZZ
@given(valid_handle_dicts)
def test_valid_handles_round_trip_through_json_dict_and_airflow_serde(data):
    handle = ExclusiveHandle.from_dict(data)
    assert handle.to_dict() == data
    assert ExclusiveHandle.from_json(handle.to_json()) == handle
    assert ExclusiveHandle.deserialize(json.loads(json.dumps(handle.serialize())), 1) == handle


@FUZZ
@given(mutated(valid_handle_dicts))
def test_a_mutated_handle_is_accepted_exactly_as_given_or_refused_as_malformed(data):
    """Never half-read: an accepted handle is the record itself (defaults filled), nothing dropped."""
    for parse in (ExclusiveHandle.from_dict, lambda d: ExclusiveHandle.from_json(json.dumps(d))):
        try:
            handle = parse(data)
        except MalformedRecordError as refused:
            assert refused.kind == "handle"
        else:
            assert handle.to_dict() == {**DEFAULTS, **data}


@FUZZ
@given(valid_handle_dicts, json_values)
def test_airflow_serde_versions_other_than_known_ints_are_malformed(data, version):
    assume(version != 1)
    with pytest.raises(MalformedRecordError):
        ExclusiveHandle.deserialize(data, version)


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", "1"), ("digest", "blake3:" + "A" * 64), ("digest", "0" * 64), ("digest", "md5:" + "0" * 64),
     ("digest", "sha256:" + "0" * 64), ("sha256", "0" * 64), ("uri", 5), ("serializer", 5),
     ("max_claims", 2**63),
     ("max_claims", True), ("max_claims", 1.0), ("max_claims", 0), ("compression", 3), ("unknown", 1)],
)  # fmt: skip
def test_each_wrong_field_is_named_in_the_refusal(field, value):
    data = {**valid_handle(), field: value}
    with pytest.raises(MalformedRecordError, match=field) as refused:
        ExclusiveHandle.from_dict(data, where="a test")
    assert refused.value.where == "a test"


def test_a_wrong_sha256_of_a_handle_of_before_13_is_named_in_the_refusal():
    data = {**valid_handle(), "sha256": "A" * 64}
    del data["digest"]
    with pytest.raises(MalformedRecordError, match="sha256 is not 64 lowercase hex digits") as refused:
        ExclusiveHandle.from_dict(data, where="a test")
    assert refused.value.where == "a test"


def test_json_that_is_not_json_is_malformed_not_a_decode_error():
    with pytest.raises(MalformedRecordError, match="not JSON"):
        ExclusiveHandle.from_json("{not json")
    with pytest.raises(MalformedRecordError, match="not JSON"):
        ExclusiveHandle.from_json("[" * 100_000)


def valid_handle() -> dict:
    return {
        "format": ExclusiveHandle.FORMAT,
        "uri": f"memory:///fuzz/{'a' * 32}.json",
        "serializer": "json",
        "size": 1,
        "digest": "blake3:" + "0" * 64,
        "producer": "p",
        "created_at": "now",
        "host": "h",
    }


# --- manifests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory) -> str:
    return tmp_path_factory.mktemp("fuzz-store").as_uri()


def _garbage_manifests() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated(valid_handle_dicts).map(lambda v: json.dumps(v).encode()),
    )


@FEW
@given(garbage=_garbage_manifests())
def test_a_garbage_manifest_refuses_the_claim_and_records_nothing(fuzz_store, garbage):
    from taskflow_exclusive.consuming import _locate

    handle = publish({"fuzz": True}, storage=fuzz_store)
    store, paths = _locate(handle)
    store.fs.pipe_file(paths.manifest, garbage)
    with pytest.raises((IntegrityError, MalformedRecordError)):
        handle.claim(consumer_id="fuzzer")
    assert handle.holders() == []


@FEW
@given(data=st.data())
def test_a_manifest_altered_field_by_field_refuses_the_claim_unless_it_still_matches(fuzz_store, data):
    from taskflow_exclusive.consuming import _locate

    handle = publish({"fuzz": True}, storage=fuzz_store)
    store, paths = _locate(handle)
    altered = data.draw(mutated(st.just(handle.to_dict())))
    store.fs.pipe_file(paths.manifest, json.dumps(altered).encode())
    if {**DEFAULTS, **altered} == handle.to_dict():
        assert handle.claim(consumer_id="fuzzer") == {"fuzz": True}
        return
    with pytest.raises((IntegrityError, MalformedRecordError)):
        handle.claim(consumer_id="fuzzer")
    assert handle.holders() == []


def test_a_manifest_nested_too_deep_to_parse_refuses_the_claim(fuzz_store):
    from taskflow_exclusive.consuming import _locate

    handle = publish({"fuzz": True}, storage=fuzz_store)
    store, paths = _locate(handle)
    store.fs.pipe_file(paths.manifest, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises((IntegrityError, MalformedRecordError)):
        handle.claim(consumer_id="fuzzer")


# --- XCom rows ---------------------------------------------------------------------------------


class _Row:
    """What Airflow hands ``deserialize_value``: an object with ``.value``."""

    def __init__(self, value) -> None:
        self.value = value


REF_KEY = "return_value"


@pytest.fixture(scope="module")
def reference_row(fuzz_store):
    """A reference row exactly as ExclusiveXCom writes it, and the value behind it."""
    from taskflow_exclusive.airflow.xcom import MARKER, REFERENCE, XCOM_FOLDER

    task = TaskInstanceId("fuzz_dag", "manual__2026-01-01T00:00:00+00:00", "extract", -1, None)
    value = {"rows": list(range(5))}
    handle = ExclusiveOutput(storage=fuzz_store).publish(value, task=task, subfolder=(XCOM_FOLDER, REF_KEY))
    return {MARKER: REFERENCE, "key": REF_KEY, "handle": handle.to_dict()}, value


def test_a_reference_row_as_the_backend_writes_it_is_followed(reference_row):
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom

    row, value = reference_row
    assert ExclusiveXCom.deserialize_value(_Row(row)) == value


@FUZZ
@given(data=st.data())
def test_a_mutated_reference_row_is_followed_only_if_unchanged(reference_row, data):
    from taskflow_exclusive.airflow.xcom import MARKER, REFERENCE, ExclusiveXCom

    row, value = reference_row
    handle_field = st.one_of(json_values, mutated(st.just(row["handle"])))
    altered = data.draw(
        st.one_of(
            mutated(st.just(row)),
            st.fixed_dictionaries({MARKER: st.just(REFERENCE), "key": json_values, "handle": handle_field}),
            st.dictionaries(st.just(MARKER) | st.text(max_size=5), json_values, min_size=1).map(
                lambda d: {**d, MARKER: d.get(MARKER, REFERENCE)}
            ),
        )
    )
    try:
        loaded = ExclusiveXCom.deserialize_value(_Row(altered))
    except ExclusiveError:
        return
    if isinstance(altered, dict) and altered.get(MARKER) == REFERENCE:
        assert altered == row and loaded == value  # a reference is followed only as written


@pytest.mark.parametrize(
    "row",
    [
        {"__taskflow_exclusive__": "xcom-ref/1"},
        {"__taskflow_exclusive__": "xcom-ref/1", "handle": 5, "key": REF_KEY},
        {"__taskflow_exclusive__": "xcom-escaped/1"},
        {"__taskflow_exclusive__": "xcom-escaped/1", "value": "not the escaped dict"},
        {"__taskflow_exclusive__": "xcom-ref/2", "handle": {}},
        {"__taskflow_exclusive__": ["x"]},
    ],
)
def test_malformed_rows_carrying_the_marker_are_malformed_records(row):
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom

    with pytest.raises(MalformedRecordError) as refused:
        ExclusiveXCom.deserialize_value(_Row(row))
    assert refused.value.kind in ("XCom row", "handle")


def test_a_reference_to_a_value_outside_the_backends_layout_is_never_followed(reference_row, fuzz_store):
    """Before: any committed value (here an @exclusive_task-style one) was read through a forged row."""
    from taskflow_exclusive.airflow.xcom import ExclusiveXCom

    row, _ = reference_row
    elsewhere = publish({"someone": "else's"}, storage=fuzz_store)
    with pytest.raises(MalformedRecordError, match="outside the backend's layout"):
        ExclusiveXCom.deserialize_value(_Row({**row, "handle": elsewhere.to_dict()}))
    with pytest.raises(MalformedRecordError, match="another key"):
        ExclusiveXCom.deserialize_value(_Row({**row, "key": "other_key"}))
    assert elsewhere.holders() == []


# --- storage URLs ------------------------------------------------------------------------------

SECRET = "Sup3rS3cret"


@st.composite
def url_shaped(draw) -> str:
    schemes = [
        "file",
        "memory",
        "s3",
        "gs",
        "gcs",
        "zip",
        "tar",
        "http",
        "simplecache",
        "nosuch",
        "S3",
        "1a",
        "abfs",
        "reference",
        "local",
    ]
    scheme = draw(st.sampled_from(["", *schemes]))
    user = draw(st.sampled_from(["", "conn@", f"key:{SECRET}@", f":{SECRET}@", "a b@", "c%40d@"]))
    host = draw(st.sampled_from(["", "bucket", "localhost", "b:9000", "[::1]", "..", "Bücket", "b\u200b"]))
    odd_segments = st.sampled_from(["x", "..", ".", "", "a b", "é", "%2F", "\x00"])
    segments = draw(st.lists(odd_segments | st.text(max_size=5), max_size=4))
    tail = draw(st.sampled_from(["", "?q=1", "#frag", "/"]))
    return f"{scheme}://{user}{host}/{'/'.join(segments)}{tail}"


@FUZZ
@given(st.text() | url_shaped())
def test_a_storage_url_parses_and_round_trips_or_is_a_storage_config_error(url):
    try:
        location = parse_storage_url(url, source="Airflow Variable 'fuzz'")
    except StorageConfigError as refused:
        assert refused.source == "Airflow Variable 'fuzz'"
        assert "from Airflow Variable 'fuzz'" in str(refused)
        assert SECRET not in str(refused) and SECRET not in str(refused.url)
        return
    again = parse_storage_url(location.uri(), source="Airflow Variable 'fuzz'")
    assert again == location
    assert SECRET not in location.uri()


@FUZZ
@given(st.integers() | st.binary() | st.none() | st.lists(st.text(), max_size=2) | st.floats())
def test_a_storage_url_that_is_not_a_string_is_a_storage_config_error(url):
    with pytest.raises(StorageConfigError):
        parse_storage_url(url)


@FEW
@given(st.text() | url_shaped())
def test_publish_refuses_every_url_the_parser_refuses_before_writing(url):
    try:
        parse_storage_url(url.strip())
    except StorageConfigError:
        pass
    else:
        assume(False)  # valid URLs would write to real places: covered by the storage tests
    assume(url.strip())  # an empty argument means "use the Variable"
    with pytest.raises(StorageConfigError):
        publish("x", storage=url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zip:///tmp/values.zip", "archive"),
        ("tar://x", "archive"),
        ("http://example.com/values", "read-only"),
        ("simplecache::s3://bucket/x", "chains"),
        ("file://relative/path", "must be local"),
        ("s3:///prefix", "no bucket"),
        ("s3://bucket:9000/x", "port"),
        ("s3://bucket/x?versionId=1", "query string"),
        ("file:///data/../etc", "'..'"),
        ("s3://b\u200bucket/x", "invisible"),
        ("s3://Bücket/x", "not a bucket name"),
        ("dbfs://workspace/x", "could not be set up"),
    ],
)
def test_unsupported_storage_urls_are_refused_up_front_naming_the_url_and_the_setting(url, message):
    with pytest.raises(StorageConfigError, match=message) as refused:
        publish("x", storage=url)
    assert refused.value.source == "argument" and repr(url)[1:-1] in str(refused.value)


def test_zip_storage_lists_the_supported_schemes():
    """Before: zip:// storage failed while writing with IsADirectoryError."""
    with pytest.raises(StorageConfigError, match=r"Supported: file:///.*s3://.*gs://"):
        publish("x", storage="zip:///tmp/values.zip")


def test_a_password_is_masked_in_every_refusal():
    for url in (f"s3://key:{SECRET}@bucket/x", f"key:{SECRET}@bucket/x", f"zip://key:{SECRET}@x/y"):
        with pytest.raises(StorageConfigError) as refused:
            parse_storage_url(url)
        assert SECRET not in str(refused.value) and SECRET not in refused.value.url


# --- max_claims --------------------------------------------------------------------------------

BAD_MAX_CLAIMS = ["2", 0, -1, True, 2**63, 1.0, None, MAX_CLAIMS_LIMIT + 1]


def _task_exclusive(max_claims):
    from airflow.sdk import task

    return task.exclusive(max_claims=max_claims)  # through the provider entry point


def _exclusive_task(max_claims):
    from taskflow_exclusive import exclusive_task

    return exclusive_task(max_claims=max_claims)


def _exclusive_output(max_claims):
    from taskflow_exclusive import exclusive_output

    return exclusive_output(max_claims=max_claims)


MAX_CLAIMS_TAKERS = {
    "publish": lambda v: publish("x", storage="memory://fuzz-max-claims", max_claims=v),
    "ExclusiveOutput": lambda v: ExclusiveOutput(max_claims=v),
    "exclusive_task": _exclusive_task,
    "exclusive_output": _exclusive_output,
    "@task.exclusive": _task_exclusive,
}


@pytest.mark.parametrize("taker", sorted(MAX_CLAIMS_TAKERS))
@pytest.mark.parametrize("value", BAD_MAX_CLAIMS, ids=repr)
def test_an_invalid_max_claims_is_an_invalid_argument_error_wherever_it_is_given(taker, value):
    with pytest.raises(InvalidArgumentError) as refused:
        MAX_CLAIMS_TAKERS[taker](value)
    assert refused.value.argument == "max_claims"


@FEW
@given(
    st.one_of(
        st.text(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.integers().filter(lambda n: not 1 <= n <= MAX_CLAIMS_LIMIT),
        st.lists(st.integers(1, 3), max_size=2),
    )
)
def test_any_max_claims_but_an_int_in_range_is_refused_by_publish(value):
    with pytest.raises(InvalidArgumentError):
        publish("x", storage="memory://fuzz-max-claims", max_claims=value)


# --- the command line --------------------------------------------------------------------------


def _main(argv: list[str], stdin: str = "") -> tuple[int, str]:
    """``cli.main(argv)`` in this process: its exit status and what it wrote on standard error."""
    from taskflow_exclusive.cli import main as cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.stdin = old_stdin
    return status, err.getvalue()


def _assert_one_line_refusal(status: int, stderr: str) -> None:
    assert status in (1, 2), (status, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], stderr
    assert "Traceback" not in stderr


def _not_a_url(url: str) -> bool:
    try:
        parse_storage_url(url)
    except StorageConfigError:
        return True
    return False


garbage_args = st.text(max_size=30) | st.sampled_from(["@", "@/", "@/nonexistent/x", "-", "{}", "[]", "null"])
handle_args = st.one_of(
    garbage_args,
    json_values.map(json.dumps),
    mutated(valid_handle_dicts).map(json.dumps),
)


@FEW
@given(handle=handle_args, stdin=st.text(max_size=30))
def test_holders_with_a_garbage_handle_fails_in_one_line(handle, stdin):
    assume(not handle.startswith("-") or handle == "-")
    status, stderr = _main(["holders", handle], stdin=stdin)
    if status == 0:  # a mutation that left a valid handle: nothing to refuse
        ExclusiveHandle.from_json(stdin if handle == "-" else handle)
    else:
        _assert_one_line_refusal(status, stderr)


@FEW
@given(handle=handle_args, consumer=st.text(max_size=20), reason=st.text(max_size=20))
def test_release_with_garbage_arguments_fails_in_one_line(handle, consumer, reason):
    assume(not handle.startswith("-") and not consumer.startswith("-") and not reason.startswith("-"))
    _assert_one_line_refusal(*_main(["release", handle, "--consumer", consumer, "--reason", reason]))


@FEW
@given(url=st.text(max_size=30) | url_shaped(), older_than=st.none() | st.text(max_size=12))
def test_cleanup_with_a_bad_url_or_duration_fails_in_one_line(url, older_than):
    assume(not url.startswith("-") and _not_a_url(url.strip()))
    argv = ["cleanup", url, "--dry-run"]
    if older_than is not None:
        assume(not older_than.startswith("-"))
        argv += ["--older-than", older_than]
    _assert_one_line_refusal(*_main(argv))


@FEW
@given(st.lists(st.text(max_size=10), max_size=4))
def test_any_argument_list_either_runs_or_fails_in_one_line(argv):
    assume(not argv or argv[0] not in ("demo", "cleanup", "holders", "release"))
    status, stderr = _main(argv)
    if status != 0:
        _assert_one_line_refusal(status, stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["holders", "{not json"],
        ["holders", "@/nonexistent/handle.json"],
        ["holders", "@/"],
        ["release", json.dumps({"format": "x"}), "--consumer", "c", "--reason", "r"],
        ["release", "{}", "--consumer", "", "--reason", "gone"],
        ["cleanup", "zip:///tmp/x.zip"],
        ["cleanup", "s3://bucket:9000/x?y"],
        ["cleanup", "memory://x", "--older-than", "soonish"],
        ["cleanup", "memory://x", "--older-than", "99999999999d"],
        ["no-such-command"],
    ],
    ids=lambda argv: " ".join(argv)[:40],
)
def test_the_installed_command_refuses_garbage_in_one_line_without_a_traceback(argv):
    done = subprocess.run(
        [str(CLI), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
        stdin=subprocess.DEVNULL,
    )
    _assert_one_line_refusal(done.returncode, done.stderr)
