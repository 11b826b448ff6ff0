"""Every form a person can copy a handle from reads back the same handle; nothing else is read.

The forms are checked against what Airflow itself produces (its serde and the
``stringify`` the UI and REST API use), and every form gets exactly the checks
a handle's JSON gets: a form never lets through a record ``from_dict`` refuses.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflow_exclusive.errors import MalformedRecordError
from taskflow_exclusive.handle import ExclusiveHandle
from taskflow_exclusive.handle_forms import ACCEPTED_FORMS, envelope, parse_handle, reference_row, ui_text
from tests.test_trust_boundaries import json_values, mutated, valid_handle_dicts

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any printable text a handle's text fields may hold (quotes, backslashes, non-ASCII, "=", ")").
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30)
handles = st.builds(
    ExclusiveHandle,
    uri=st.builds(
        lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(["file", "s3", "gs"]), printable
    ),
    serializer=printable.filter(bool),
    size=st.integers(0, 2**63),
    digest=st.builds(
        "{}:{}".format,
        st.sampled_from(["blake3", "sha256"]),
        st.text("0123456789abcdef", min_size=64, max_size=64),
    ),
    producer=printable,
    created_at=printable,
    host=printable,
    compression=st.none() | printable.filter(bool),
    max_claims=st.integers(1, 1000),
    claims=st.none() | printable.filter(bool),
).filter(lambda h: h.uri.isprintable())


def _airflow_stringify(handle: ExclusiveHandle) -> str:
    """What the UI shows: Airflow's serde envelope, stored as JSON, through the REST API's stringify."""
    from taskflow_exclusive.airflow._compat import serde_module

    stored = json.loads(json.dumps(serde_module().serialize(handle)))
    try:  # Airflow 3.2 and newer: the REST API's stringify
        from airflow.serialization.stringify import stringify
    except ModuleNotFoundError:  # Airflow 3.1: serde's own "not full" deserialization
        return serde_module().deserialize(stored, full=False)
    return stringify(stored)


def _forms(handle: ExclusiveHandle) -> dict[str, str]:
    entry = {"key": "return_value", "task_id": "extract", "dag_id": "etl", "map_index": -1}
    return {
        "handle": handle.to_json(),
        "envelope": json.dumps(envelope(handle)),
        "reference": json.dumps(reference_row(handle)),
        "ui": ui_text(handle),
        "ui quoted": json.dumps(ui_text(handle)),
        "xcom entry": json.dumps({**entry, "value": envelope(handle)}),
        "xcom entry, deserialize=true": json.dumps({**entry, "value": ui_text(handle)}),
        "xcom entry, stringify=true": json.dumps({**entry, "value": json.dumps(envelope(handle))}),
        "indented": json.dumps(envelope(handle), indent=2) + "\n",
    }


def test_the_helpers_produce_exactly_what_airflow_stores_and_shows():
    from taskflow_exclusive.airflow._compat import serde_serialize as serialize

    handle = ExclusiveHandle(
        uri="file:///tmp/v/a.json",
        serializer="json",
        size=3,
        digest="blake3:" + "a" * 64,
        producer="etl/run/extract/-1",
        created_at="2026-01-01T00:00:00+00:00",
        host="worker-1",
    )
    assert envelope(handle) == json.loads(json.dumps(serialize(handle)))
    shown = _airflow_stringify(handle)
    if importlib.util.find_spec("airflow.serialization.stringify") is not None:  # Airflow 3.2+
        assert ui_text(handle) == shown
    else:  # Airflow 3.1 shows the values unquoted: read, not produced, by the library
        assert shown.startswith("taskflow_exclusive.handle.ExclusiveHandle@version=1(format=taskflow-")
    assert parse_handle(shown) == handle
    assert ui_text(handle).startswith("taskflow_exclusive.handle.ExclusiveHandle@version=1(format=")


@PROPERTY
@given(handles)
def test_every_form_of_any_handle_reads_back_the_same_handle(handle):
    for form, text in _forms(handle).items():
        assert parse_handle(text) == handle, form
    assert parse_handle(_airflow_stringify(handle)) == handle


@PROPERTY
@given(mutated(valid_handle_dicts))
def test_a_form_refuses_exactly_the_records_a_handles_json_refuses(data):
    try:
        expected = ExclusiveHandle.from_dict(data)
    except MalformedRecordError:
        expected = None
    wrapped = {
        "handle": json.dumps(data),
        "envelope": json.dumps(
            {"__classname__": "taskflow_exclusive.handle.ExclusiveHandle", "__version__": 1, "__data__": data}
        ),
        "reference": json.dumps({"__taskflow_exclusive__": "xcom-ref/1", "key": "k", "handle": data}),
    }
    for form, text in wrapped.items():
        if expected is None:
            with pytest.raises(MalformedRecordError):
                parse_handle(text)
        else:
            assert parse_handle(text) == expected, form


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=300) | json_values.map(json.dumps))
def test_garbage_is_refused_with_an_error_naming_every_accepted_form(text):
    try:
        handle = parse_handle(text)
    except MalformedRecordError as refused:
        assert refused.kind == "handle" and refused.problem
        for form in ACCEPTED_FORMS:
            assert form in str(refused)
    else:  # only a real handle gets through, and then exactly as from_dict rebuilds it
        assert ExclusiveHandle.from_dict(handle.to_dict()) == handle


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "it is empty"),
        ("[1, 2]", "a JSON array of 2 items; pass one handle at a time"),
        ('{"__classname__": "builtins.tuple", "__version__": 1, "__data__": [1]}', "'builtins.tuple'"),
        ('{"__taskflow_exclusive__": "xcom-escaped/1", "value": {}}', "not a reference"),
        ("taskflow_exclusive.handle.ExclusiveHandle@version=1(uri='s3://b/k'", "cut short"),
        ("builtins.tuple@version=1(1,2)", "UI text of a 'builtins.tuple'"),
    ],
)
def test_what_is_wrong_is_named(text, problem):
    with pytest.raises(MalformedRecordError, match="Not a taskflow-exclusive handle") as refused:
        parse_handle(text, where="the HANDLE argument")
    assert problem in refused.value.problem
    assert "in the HANDLE argument" in str(refused.value)


def test_the_ui_text_is_read_as_literals_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    good = ui_text(ExclusiveHandle("file:///v/a.json", "json", 1, "blake3:" + "0" * 64, "p", "t", "h"))
    for field in ("size=1", "uri='file:///v/a.json'"):
        attack = good.replace(field, f"{field.split('=')[0]}=open({str(marker)!r}, 'w')")
        with pytest.raises(MalformedRecordError, match="not a string, number or None"):
            parse_handle(attack)
    assert not marker.exists()


def test_a_newer_serde_version_is_refused_in_every_form_that_carries_one():
    handle = ExclusiveHandle("file:///v/a.json", "json", 1, "blake3:" + "0" * 64, "p", "t", "h")
    newer_envelope = {**envelope(handle), "__version__": 2}
    for text in (json.dumps(newer_envelope), ui_text(handle).replace("@version=1(", "@version=2(")):
        with pytest.raises(MalformedRecordError, match="newer than this taskflow-exclusive understands"):
            parse_handle(text)


def test_airflow_3_1_ui_text_of_a_handle_written_before_digests_reads_back():
    # Airflow 3.1 shows the values unquoted, in the order the handle's dict had when it was
    # stored: before #13 the sha256 came right after the size.
    text = (
        "taskflow_exclusive.handle.ExclusiveHandle@version=1(format=taskflow-exclusive/handle/1,"
        "uri=file:///tmp/v/a.json,serializer=json,size=3," + "sha256=" + "b" * 64 + ",producer=etl/run/x/-1,"
        "created_at=2026-01-01T00:00:00+00:00,host=worker-1,compression=None,max_claims=1,claims=None)"
    )
    handle = parse_handle(text)
    assert (handle.digest, handle.sha256, handle.size, handle.claims) == (
        "sha256:" + "b" * 64,
        "b" * 64,
        3,
        None,
    )
    with pytest.raises(MalformedRecordError):  # a field twice fits neither order
        parse_handle(text.replace("size=3,", "size=3,size=4,"))
