"""The Claims view: a tab on each DAG run and task instance of the Airflow UI (Airflow 3.1+).

A FastAPI app that the plugin (:mod:`taskflow_exclusive.airflow.plugin`) mounts in the
API server under ``/taskflow-exclusive``, with these routes (relative to it):

- ``claims?dag_id=&run_id=[&task_id=&map_index=]``: the HTML page the tabs show
  (needs permission to read the DAG's XComs);
- ``api/claims?dag_id=&run_id=[&task_id=&map_index=]``: the same as JSON
  (:func:`~taskflow_exclusive.airflow.inventory.run_inventory`; read the DAG's XComs);
- ``api/release?dag_id=&run_id=``, POST with the JSON body ``{"uri", "consumer_id",
  "reason"}``: free one holder's claim (needs permission to edit the DAG);
- ``claims.js``: the page's script (no data).

Airflow does not protect a plugin's routes: every data route here asks Airflow's own
auth manager, through the API server's public dependencies ``GetUserDep`` (the bearer
token, or the UI's session cookie) and ``requires_access_dag`` (the same check the REST
API makes). No token: 401; a token without the permission: 403. Only metadata is ever
shown (serializer, size, checksum, where a value is stored with secrets withheld, who
holds it); never a value.

A release is ``ExclusiveHandle.release(consumer_id, reason=...)``, the very call behind
``taskflow-exclusive release``: the ledger logs it at WARNING with the reason, to which
the view adds who released it. Only a value of the named run can be released from here.

Example (what the plugin registers; the app is built on the first request)::

    from taskflow_exclusive.airflow.claims_view import create_app
    fastapi_apps = [{"app": create_app(), "url_prefix": "/taskflow-exclusive", "name": "Claims"}]
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, unquote, urlencode

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from taskflow_exclusive.airflow.inventory import RunInventory, StoredValue, run_inventory

if TYPE_CHECKING:
    from taskflow_exclusive.airflow.inventory import Holder

__all__ = ["URL_PREFIX", "create_app"]

log = logging.getLogger("taskflow_exclusive.claims_view")

URL_PREFIX = "/taskflow-exclusive"
SCRIPT = Path(__file__).with_name("claims_view.js")


@dataclass(frozen=True)
class RunSelection:
    """The DAG run (and task instance) a request names in its query string."""

    dag_id: str
    run_id: str
    task_id: str | None = None
    map_index: int | None = None


def selected_run(request: Request) -> RunSelection:
    """``dag_id``, ``run_id``, ``task_id``, ``map_index`` from the query, with ``+`` read as a plus sign.

    The UI puts ``{RUN_ID}`` into the tab's href URL-encoded on Airflow 3.3.2 (``%2B``) but
    as is on 3.1.8, and a manual run id ends in ``+00:00``: form decoding would make that
    ``+`` a space and name a run that does not exist. Read this way, both are the same run
    (run ids hold no spaces: ``[scheduler] allowed_run_id_pattern``).

    >>> from starlette.requests import Request
    >>> query = b"dag_id=etl&run_id=manual__2026-01-01T00:00:00+00:00&map_index=2"
    >>> selected_run(Request({"type": "http", "query_string": query, "headers": []})).run_id
    'manual__2026-01-01T00:00:00+00:00'
    """
    fields: dict[str, str] = {}
    for pair in request.scope.get("query_string", b"").decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        fields.setdefault(unquote(name), unquote(value))
    dag_id, run_id = fields.get("dag_id", ""), fields.get("run_id", "")
    if not dag_id or not run_id:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Name the DAG run: ?dag_id=...&run_id=...")
    if dag_id != request.query_params.get("dag_id"):  # what requires_access_dag checked: the same DAG
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{dag_id!r} is not a DAG id")
    map_index = fields.get("map_index") or None
    if map_index is not None and not re.fullmatch(r"-1|[0-9]{1,9}", map_index):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"map_index must be -1 or an index, not {map_index!r}"
        )
    return RunSelection(
        dag_id=dag_id,
        run_id=run_id,
        task_id=fields.get("task_id") or None,
        map_index=None if map_index is None else int(map_index),
    )


SelectedRun = Annotated[RunSelection, Depends(selected_run)]


class ReleaseRequest(BaseModel):
    """What the page sends to free a claim: the value (as shown), the holder, and why."""

    uri: str
    consumer_id: str
    reason: str


def create_app() -> FastAPI:
    """The Claims view's FastAPI app (mounted by the plugin at :data:`URL_PREFIX`).

    >>> sorted(route.path for route in create_app().routes if "claims" in route.path)
    ['/api/claims', '/claims', '/claims.js']
    """
    app = FastAPI(
        title="taskflow-exclusive claims",
        description="Who holds each claim-once value of a DAG run (metadata only).",
        docs_url=None,
        redoc_url=None,
    )
    can_read = Depends(requires_access_dag("GET", DagAccessEntity.XCOM))
    can_edit = requires_access_dag("PUT")

    def may_release(request: Request, user: Any) -> bool:
        try:
            can_edit(request, user)
        except HTTPException:
            return False
        return True

    @app.get("/claims", response_class=HTMLResponse, dependencies=[can_read])
    def claims_page(request: Request, user: GetUserDep, run: SelectedRun) -> HTMLResponse:
        page = render_page(
            run_inventory(run.dag_id, run.run_id),
            task_id=run.task_id,
            map_index=run.map_index,
            user=user.get_name(),
            can_release=may_release(request, user),
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/api/claims", dependencies=[can_read])
    def claims_json(request: Request, user: GetUserDep, run: SelectedRun) -> dict[str, Any]:
        inventory = run_inventory(run.dag_id, run.run_id, task_id=run.task_id, map_index=run.map_index)
        return {"can_release": may_release(request, user), **inventory.to_dict()}

    @app.post("/api/release", dependencies=[Depends(can_edit)])
    def release(request: Request, user: GetUserDep, body: ReleaseRequest, run: SelectedRun) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            # a cross-site form cannot send JSON: the session cookie alone never releases a claim
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send the request as JSON.")
        return release_claim(run.dag_id, run.run_id, body, user.get_name())

    @app.get("/claims.js", include_in_schema=False)
    def script() -> FileResponse:
        return FileResponse(SCRIPT, media_type="text/javascript")

    return app


def release_claim(dag_id: str, run_id: str, body: ReleaseRequest, user: str) -> dict[str, Any]:
    """Free ``body.consumer_id``'s claim on a value of the run; the answer the page shows.

    Raises :class:`HTTPException`: 400 without a reason, 404 if the run has no value at
    ``body.uri``, 409 if the consumer holds no claim on it, 503 if the ledger refused.
    """
    from taskflow_exclusive.errors import ExclusiveError, InvalidArgumentError

    reason = " ".join(body.reason.split())
    if not reason:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "A reason is required: it is logged for the audit.")
    try:
        value = run_inventory(dag_id, run_id).value(body.uri)
    except KeyError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"Run {run_id!r} of DAG {dag_id!r} has no value at {body.uri}."
        ) from None
    try:
        released = value.handle().release(
            body.consumer_id, reason=f"{reason} (released by {user!r} in the Airflow UI's Claims view)"
        )
    except InvalidArgumentError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except (ExclusiveError, OSError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"The claim ledger refused: {exc}") from None
    if released is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{body.consumer_id!r} holds no claim on {value.uri}; nothing was released.",
        )
    return {
        "released": {
            "uri": value.uri,
            "consumer_id": released.consumer_id,
            "claimed_at": released.claimed_at.isoformat(),
            "slot": released.slot,
        },
        "released_by": user,
        "reason": reason,
    }


# --- the page ------------------------------------------------------------------------------------


def render_page(
    inventory: RunInventory,
    *,
    task_id: str | None = None,
    map_index: int | None = None,
    user: str = "",
    can_release: bool = False,
) -> str:
    """The Claims tab as HTML: one table for a run, or what one task instance produced and claimed.

    >>> from taskflow_exclusive.airflow.inventory import RunInventory
    >>> "nothing stored" in render_page(RunInventory("etl", "run1", (), ()))
    True
    """
    query = {"dag_id": inventory.dag_id, "run_id": inventory.run_id}
    title = f"Claims of DAG {inventory.dag_id}, run {inventory.run_id}"
    sections: list[str] = []
    if task_id is not None:
        index = -1 if map_index is None else map_index
        label = _task_label(task_id, index)
        title = f"Claims of task {label} in run {inventory.run_id}"
        try:
            ti = inventory.task_instance(task_id, index)
        except KeyError:
            sections.append(f"<p class='empty'>Task instance {_e(label)} is not in this run.</p>")
        else:
            produced = [inventory.value(uri) for uri in ti.produced]
            claimed = [inventory.value(uri) for uri in ti.claimed]
            sections.append(f"<h2>Values {_e(label)} produced</h2>")
            sections.append(_values_table(produced, can_release, "produced"))
            sections.append(f"<h2>Values {_e(label)} claimed</h2>")
            sections.append(_values_table(claimed, can_release, "claimed"))
    else:
        sections.append("<h2>Values of this run</h2>")
        sections.append(_values_table(list(inventory.values), can_release, "run"))
        sections.append("<h2>Task instances</h2>")
        sections.append(_task_table(inventory))
    if inventory.problems:
        items = "".join(f"<li>{_e(problem)}</li>" for problem in inventory.problems)
        sections.append(f"<h2>XCom rows not followed</h2><ul class='problems'>{items}</ul>")
    if can_release:
        access = f"Signed in as {_e(user)}: you may release claims of this DAG (a reason is required)."
    else:
        access = (
            f"Signed in as {_e(user)}: read only. Releasing a claim needs permission to edit "
            f"DAG {_e(inventory.dag_id)}."
        )
    summary = _summary(list(inventory.values))
    if task_id is not None:
        shown = inventory.for_task(task_id, -1 if map_index is None else map_index)
        summary = f"{_task_label(task_id, -1 if map_index is None else map_index)}: " + _summary(
            list(shown.values)
        )
    return _PAGE.format(
        title=_e(title),
        summary=_e(summary),
        access=access,
        sections="\n".join(sections),
        release_url=_e("api/release?" + urlencode(query, quote_via=quote)),
        can_release="true" if can_release else "false",
    )


def _summary(values: list[StoredValue]) -> str:
    unclaimed = sum(value.unclaimed for value in values)
    stale = sum(value.stale for value in values)
    return f"{len(values)} value(s); {unclaimed} unclaimed; {stale} held by a task that failed for good"


def _values_table(values: list[StoredValue], can_release: bool, kind: str) -> str:
    if not values:
        return f"<p class='empty' data-kind='{kind}'>None: nothing stored with taskflow-exclusive here.</p>"
    rows = "\n".join(_value_row(value, can_release) for value in values)
    return (
        f"<table class='values' data-kind='{kind}'><thead><tr>"
        "<th>Produced by</th><th>XCom</th><th>Serializer</th><th>Size</th><th>Digest</th>"
        "<th>Stored at</th><th>Created</th><th>Holders</th><th>Flags</th>"
        f"</tr></thead><tbody>\n{rows}\n</tbody></table>"
    )


def _short_digest(digest: str) -> str:
    """``blake3:1a2b3c4d5e6f`` for ``blake3:<64 hex>``: the algorithm and 12 hex digits."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}:{hexdigest[:12]}"


def _value_row(value: StoredValue, can_release: bool) -> str:
    codec = f" + {value.compression}" if value.compression else ""
    places = "<br>".join(_e(place.key + place.path) for place in value.places)
    holders = "".join(_holder_item(value, holder, can_release) for holder in value.holders)
    if value.problem:
        holders = f"<span class='problem'>holders unreadable: {_e(value.problem)}</span>"
    elif not holders:
        holders = "<span class='none'>nobody</span>"
    else:
        holders = f"<ul class='holders'>{holders}</ul>"
    flags = []
    if value.unclaimed:
        flags.append("<span class='flag unclaimed'>unclaimed</span>")
    if value.stale:
        flags.append("<span class='flag stale' title='held by a task that failed for good'>stale</span>")
    claims = f"{len(value.holders)}/{value.max_claims} claimed"
    return (
        f"<tr data-uri='{_e(value.uri)}'>"
        f"<td>{_e(_task_label(value.task_id, value.map_index))}</td>"
        f"<td>{places}<div class='sub'>{_e(value.form)}</div></td>"
        f"<td>{_e(value.serializer + codec)}</td>"
        f"<td title='{value.size} bytes'>{_e(_size(value.size))}</td>"
        f"<td><code title='{_e(value.digest)}'>{_e(_short_digest(value.digest))}…</code></td>"
        f"<td><code class='uri' title='{_e(value.uri)}'>{_e(_short_uri(value.uri))}</code>"
        f"<div class='sub'>ledger: {_e(value.ledger)}</div></td>"
        f"<td title='{_e(value.created_at)}'>{_e(_moment(value.created_at))}"
        f"<div class='sub'>on {_e(value.created_on)}</div></td>"
        f"<td>{holders}<div class='sub'>{claims}</div></td>"
        f"<td>{''.join(flags)}</td>"
        "</tr>"
    )


def _holder_item(value: StoredValue, holder: Holder, can_release: bool) -> str:
    who = holder.consumer_id
    if holder.task_id is not None:
        who = _task_label(holder.task_id, holder.map_index if holder.map_index is not None else -1)
    state = f" ({holder.task_state})" if holder.task_state else ""
    stale = " <span class='flag stale'>failed for good</span>" if holder.stale else ""
    disabled = "" if can_release else " disabled title='needs permission to edit the DAG'"
    form = (
        f"<form class='release' data-uri='{_e(value.uri)}' data-consumer='{_e(holder.consumer_id)}'>"
        f"<input name='reason' placeholder='reason (required)' aria-label='reason'{disabled}>"
        f"<button type='submit'{disabled}>Release</button></form>"
    )
    return (
        f"<li class='holder' data-consumer='{_e(holder.consumer_id)}'>"
        f"<span class='who' title='{_e(holder.consumer_id)}'>{_e(who)}</span>{_e(state)}{stale}"
        f"<div class='sub' title='{_e(holder.claimed_at.isoformat())}'>"
        f"since {_e(_moment(holder.claimed_at.isoformat()))} "
        f"on {_e(holder.host)} (pid {holder.pid})</div>{form}</li>"
    )


def _task_table(inventory: RunInventory) -> str:
    if not inventory.task_instances:
        return "<p class='empty'>No task instances: is the DAG id and run id right?</p>"
    rows = []
    for ti in inventory.task_instances:
        claimed = "<br>".join(
            _e(f"{_task_label(v.task_id, v.map_index)} {v.places[0].key}{v.places[0].path}")
            for v in (inventory.value(uri) for uri in ti.claimed)
        )
        state = f"{ti.state or 'none'}" + (" (failed for good)" if ti.failed_for_good else "")
        rows.append(
            f"<tr><td>{_e(_task_label(ti.task_id, ti.map_index))}</td><td>{_e(state)}</td>"
            f"<td>{ti.try_number}</td><td>{len(ti.produced)}</td><td>{claimed or '—'}</td></tr>"
        )
    return (
        "<table class='tasks'><thead><tr><th>Task instance</th><th>State</th><th>Try</th>"
        "<th>Values produced</th><th>Values claimed (from)</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _short_uri(uri: str) -> str:
    """``scheme://bucket/…/<task>/<map_index>/<file>``: what tells values apart (the rest in a tooltip)."""
    scheme, _, rest = uri.partition("://")
    parts = rest.split("/")
    if len(parts) <= 5:
        return uri
    return f"{scheme}://{parts[0]}/…/{'/'.join(parts[-3:])}"


def _moment(iso: str) -> str:
    """An ISO 8601 time as ``2026-11-25 02:34:57 UTC`` (as stored when it is not ISO 8601)."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.tzinfo else "")


def _task_label(task_id: str, map_index: int) -> str:
    return task_id if map_index == -1 else f"{task_id}[{map_index}]"


def _size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover - the loop always returns


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root {{ color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }}
  body {{ margin: 12px; }}
  h1 {{ font-size: 1.25rem; margin: 0 0 4px; }}
  h2 {{ font-size: 1.05rem; margin: 18px 0 6px; }}
  table {{ border-collapse: collapse; width: 100%; }}
  th, td {{ border-bottom: 1px solid #8884; padding: 4px 6px; text-align: left; vertical-align: top; }}
  th {{ font-weight: 600; }}
  code.uri {{ word-break: break-all; font-size: 0.85em; }}
  .sub {{ color: #888; font-size: 0.85em; }}
  .flag {{ border-radius: 3px; padding: 0 4px; font-size: 0.85em; white-space: nowrap; }}
  .unclaimed {{ background: #f0c36d; color: #000; }}
  .stale {{ background: #e06c6c; color: #fff; }}
  ul.holders {{ list-style: none; margin: 0; padding: 0; }}
  li.holder + li.holder {{ margin-top: 6px; }}
  form.release {{ display: flex; gap: 4px; margin-top: 2px; }}
  form.release input {{ min-width: 10em; }}
  #status:empty {{ display: none; }}
  #status {{ padding: 6px; margin: 6px 0; border: 1px solid #8888; }}
  #status.error {{ border-color: #e06c6c; }}
  .access, .summary {{ margin: 2px 0; }}
</style>
</head>
<body data-release-url="{release_url}" data-can-release="{can_release}">
<h1>{title}</h1>
<p class="summary">{summary}</p>
<p class="access">{access}</p>
<div id="status" role="status"></div>
{sections}
<script src="claims.js"></script>
</body>
</html>
"""
