"""Hand-offs to triggered DAGs, the Airflow side: one line in the parent, one in the child.

Parent: ``grant(...)`` in the ``conf`` of Airflow's own ``TriggerDagRunOperator``::

    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from taskflow_exclusive import grant

    orders = extract()                                   # an @exclusive_task
    TriggerDagRunOperator(
        task_id="trigger_child",
        trigger_dag_id="child",
        conf={"orders": grant(orders, to="child")},      # several grants may share one conf
    )

``grant(xcom_arg, to=...)`` adds a small task (``grant_<task>_to_<dag>``)
that hands the value off (:func:`taskflow_exclusive.grants.grant_handle`)
and returns the signed document; Airflow resolves that ``XComArg`` in
``conf`` before triggering, so ``conf`` stays JSON. It works for an
``@exclusive_task`` output (one handle, or one key of ``multiple_outputs``)
and for an XCom that ``ExclusiveXCom`` offloaded. Inside a task,
``grant(handle, to=...)`` returns the document at once.

Child: ``granted("orders")`` stands for the value handed to this run::

    @exclusive_task
    def load(orders: Claimed[list]) -> int: ...          # the value, claimed for this task

    @task
    def audit(orders: Grant) -> None:
        rows = orders.claim()                            # or claim it yourself

    load(granted("orders"))

``granted(name)`` adds a task (``granted_<name>``) that checks the grant in
``dag_run.conf[name]`` (signature, addressee, expiry, hand-off still
standing) and passes it on; the consumer's claim checks it again against
its own run's ``conf``. Inside a task, ``claim_granted("orders")`` does both
at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from taskflow_exclusive.grants import Grant, accept, grant_handle, refused
from taskflow_exclusive.handle import ExclusiveHandle

__all__ = ["claim_granted", "grant", "granted"]


def grant(
    value: Any,
    *,
    to: str,
    run_id: str | None = None,
    expires: timedelta | None = None,
) -> Any:
    """Hand ``value`` to the DAG ``to`` (for ``TriggerDagRunOperator(conf=...)``).

    ``value`` is an ``XComArg`` (in a DAG: returns an ``XComArg`` resolving to
    the signed grant document) or an :class:`ExclusiveHandle` (in a task:
    returns the document). ``run_id`` fixes the child run (when the parent
    sets ``trigger_run_id``; templated); ``expires`` bounds how long the
    grant may be used.
    """
    if isinstance(value, ExclusiveHandle):
        return grant_handle(value, to, to_run=run_id, expires_in=expires).to_dict()
    from airflow.sdk import XComArg

    if not isinstance(value, XComArg):
        raise TypeError(
            f"grant() hands off an @exclusive_task output (an XComArg in a DAG, or an "
            f"ExclusiveHandle in a task), got a {type(value).__name__}."
        )
    producer, key = _plain_reference(value)
    if getattr(producer, "split", False):
        raise TypeError(
            f"grant() hands off one value, and task {producer.task_id!r} is split=True: its output "
            "is a list of handles, which cannot be granted whole. Grant from a task that gets one "
            "item (a mapped task's ExclusiveHandle: grant(handle, to=...)), or produce one value."
        )
    return _grant_task(producer, key, to, run_id, expires)


def _plain_reference(value: Any) -> tuple[Any, str]:
    producer, key = getattr(value, "operator", None), getattr(value, "key", None)
    if producer is None or not isinstance(key, str):  # .map(), .zip(), .concat() name no one task
        raise TypeError(
            f"grant() needs the output of one task (extract() or extract()['key']), not a "
            f"{type(value).__name__} built with .map(), .zip() or .concat()."
        )
    return producer, key


def _grant_task(producer: Any, key: str, to: str, run_id: str | None, expires: timedelta | None) -> Any:
    from airflow.sdk import task

    seconds = None if expires is None else expires.total_seconds()

    named = producer.task_id if key == "return_value" else f"{producer.task_id}_{key}"

    @task(task_id=f"grant_{named}_to_{to}", multiple_outputs=False)
    def hand_off(to_run: str | None = None) -> dict[str, Any]:
        handle, xcom, stored = _value_in_xcom(producer.task_id, key)
        expires_in = None if seconds is None else timedelta(seconds=seconds)
        if handle is None:
            return _grant_inline(xcom, stored, to, to_run or None, expires_in).to_dict()
        return grant_handle(handle, to, to_run=to_run or None, expires_in=expires_in, xcom=xcom).to_dict()

    output = hand_off(to_run=run_id)
    producer >> output.operator
    return output


def _value_in_xcom(task_id: str, key: str) -> tuple[ExclusiveHandle | None, dict[str, Any], Any]:
    """``(handle, coordinates, stored row)`` of an XCom of this run.

    The handle of an @exclusive_task output or of an XCom that ExclusiveXCom offloaded;
    ``None`` for an inline XCom (granted by its content).
    """
    from airflow.sdk.bases.xcom import BaseXCom

    from taskflow_exclusive.airflow._compat import stored_xcom_value
    from taskflow_exclusive.airflow.xcom import _coordinates, _mentions_handles, _reference_in, _Wrapped
    from taskflow_exclusive.identity import running_task

    me = running_task()
    if me is None:
        raise RuntimeError("the grant task runs inside Airflow only")
    where = {"dag_id": me.dag_id, "run_id": me.run_id, "task_id": task_id, "map_index": -1, "key": key}
    stored = stored_xcom_value(**where)
    reference = _reference_in(stored, _coordinates(**where))
    if reference is not None:
        return reference, where, stored
    if stored is None:
        raise TypeError(f"XCom {key!r} of task {task_id!r} holds nothing: there is no value to grant.")
    if _mentions_handles(stored):
        value = BaseXCom.deserialize_value(_Wrapped(stored))
        if isinstance(value, ExclusiveHandle):
            return value, where, stored
        raise TypeError(
            f"XCom {key!r} of task {task_id!r} holds a {type(value).__name__} of handles: grant() "
            "hands off one value (use extract()['key'] for multiple_outputs; a split=True list "
            "cannot be granted whole)."
        )
    return None, where, stored


def _grant_inline(
    where: dict[str, Any], stored: Any, to: str, to_run: str | None, expires_in: timedelta | None
) -> Grant:
    """Hand off an inline XCom: the hand-off claim on its content, a grant naming its row."""
    from taskflow_exclusive.airflow.xcom import _coordinates, _inline_claims
    from taskflow_exclusive.grants import hand_off
    from taskflow_exclusive.identity import default_consumer_id

    ledger, uri, digest = _inline_claims(_coordinates(**where), stored)
    return hand_off(
        lambda consumer: ledger.claim(uri, consumer, 1),
        uri=uri,
        digest=f"sha256:{digest}",  # an inline XCom's claims are named after its content's sha256
        handle=None,
        xcom=where,
        to_dag=to,
        to_run=to_run,
        granted_by=default_consumer_id(),
        expires_in=expires_in,
    )


def granted(name: str) -> Any:
    """In the child DAG: the value handed to this run as ``dag_run.conf[name]`` (an ``XComArg``).

    Pass it to a ``Claimed[...]`` parameter (the value, claimed for that task)
    or to a plain task, which gets the :class:`Grant` and calls ``.claim()``.
    """
    from airflow.sdk import task

    @task(task_id=f"granted_{name}")
    def check_grant() -> Grant:
        return _accepted(name)

    return check_grant()


def claim_granted(name: str, consumer_id: str | None = None) -> Any:
    """Inside a child task: claim the value granted as ``dag_run.conf[name]``; return it.

    Works for every grant: a stored value (as ``Grant.claim()``) or an inline XCom, which is
    read from the parent's run and checked against the grant's digest before it is returned.
    """
    grant = _accepted(name)
    if grant.handle is not None:
        return grant.claim(consumer_id)
    return _claim_inline_grant(grant, consumer_id)


def _claim_inline_grant(grant: Grant, consumer_id: str | None) -> Any:
    from airflow.sdk.bases.xcom import BaseXCom

    from taskflow_exclusive.airflow._compat import stored_xcom_value
    from taskflow_exclusive.airflow.xcom import _coordinates, _inline_claims, _unescaped, _Wrapped
    from taskflow_exclusive.errors import IntegrityError, ObjectMissingError
    from taskflow_exclusive.grants import handoff_uri
    from taskflow_exclusive.identity import default_consumer_id

    assert grant.xcom is not None  # a grant without a handle names an XCom (Grant.from_dict)
    where = dict(grant.xcom)
    stored = stored_xcom_value(**where)
    if stored is None:
        raise ObjectMissingError(
            f"{grant.describe()} names XCom {where['key']!r} of task {where['task_id']!r} in run "
            f"{where['run_id']!r} of DAG {where['dag_id']!r}, which no longer exists.",
            uri=grant.uri,
            written_on=None,
        )
    ledger, uri, digest = _inline_claims(_coordinates(**where), stored)
    if (uri, f"sha256:{digest}") != (grant.uri, grant.digest):
        raise IntegrityError(
            f"The XCom named by {grant.describe()} changed after it was granted (its content's "
            "sha256 differs): the value was not returned.",
            uri=grant.uri,
            expected=grant.digest,
            actual=f"sha256:{digest}",
        )
    grant.require_handoff(ledger.holders(uri))
    ledger.claim(handoff_uri(uri, grant.to_dag), consumer_id or default_consumer_id(), 1)
    return BaseXCom.deserialize_value(_Wrapped(_unescaped(stored)))


def _accepted(name: str) -> Grant:
    from taskflow_exclusive.errors import GrantNotInConfError
    from taskflow_exclusive.host import current_host
    from taskflow_exclusive.identity import running_task

    me = running_task()
    conf = current_host().run_conf()
    if me is None or conf is None:
        raise RuntimeError("granted values are claimed inside a running Airflow task only")
    if name not in conf:
        raise refused(
            GrantNotInConfError(
                f"This run of DAG {me.dag_id!r} ({me.run_id!r}) has no {name!r} in its conf (keys: "
                f"{sorted(conf)[:10]}): was it triggered with conf={{{name!r}: grant(...)}}?",
                grant=None,
                reason="not in conf",
            )
        )
    checked = accept(conf[name], dag_id=me.dag_id, run_id=me.run_id, conf=conf)
    checked.require_handoff()
    return checked
