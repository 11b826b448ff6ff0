"""A refused claim (or grant) fails its Airflow task at once, without retries.

:class:`AlreadyClaimedError` can never succeed for that consumer: its id
(``dag_id/run_id/task_id/map_index``) is the same on every try, and the
holder keeps the value until an operator releases it. Retrying would only
delay the failure and hide it. So inside a running Airflow task the error is
raised as :class:`AlreadyClaimedError` from *this* module: the same error
(a subclass of :class:`taskflow_exclusive.AlreadyClaimedError`, same
message and attributes, naming the holder) that is also Airflow's
``AirflowFailException``, which fails the task without using its retries.
Outside Airflow nothing changes. A refused grant
(:class:`~taskflow_exclusive.errors.GrantError`: tampered, misaddressed,
expired, not in the run's conf, revoked) is final in the same way and is
raised in the same no-retry form.

To hand the value to a new consumer after all, release the holder's claim
(``handle.release(holder, reason=...)``) and clear the failed task.

Example (inside a task; the task log shows the holder)::

    try:
        rows = handle.claim()
    except AlreadyClaimedError as refused:   # taskflow_exclusive.AlreadyClaimedError
        log.info("held by %s", refused.holder)
        raise
"""

from __future__ import annotations

from taskflow_exclusive import errors
from taskflow_exclusive.airflow._compat import AirflowFailException

__all__ = ["AlreadyClaimedError", "fail_task_without_retry"]

NO_RETRY_NOTE = " The task fails without retrying: every try of this consumer would be refused the same way."


class AlreadyClaimedError(errors.AlreadyClaimedError, AirflowFailException):
    """``AlreadyClaimedError`` raised inside an Airflow task: fails it without retries."""


class GrantSignatureError(errors.GrantSignatureError, AirflowFailException):
    """``GrantSignatureError`` raised inside an Airflow task: fails it without retries."""


class GrantAddressError(errors.GrantAddressError, AirflowFailException):
    """``GrantAddressError`` raised inside an Airflow task: fails it without retries."""


class GrantExpiredError(errors.GrantExpiredError, AirflowFailException):
    """``GrantExpiredError`` raised inside an Airflow task: fails it without retries."""


class GrantNotInConfError(errors.GrantNotInConfError, AirflowFailException):
    """``GrantNotInConfError`` raised inside an Airflow task: fails it without retries."""


class GrantRevokedError(errors.GrantRevokedError, AirflowFailException):
    """``GrantRevokedError`` raised inside an Airflow task: fails it without retries."""


_NO_RETRY_FORMS: dict[type[errors.ExclusiveError], type[errors.ExclusiveError]] = {
    form.__mro__[1]: form
    for form in (
        AlreadyClaimedError,
        GrantSignatureError,
        GrantAddressError,
        GrantExpiredError,
        GrantNotInConfError,
        GrantRevokedError,
    )
}


def fail_task_without_retry(refused: errors.ExclusiveError) -> None:
    """Raise ``refused`` as its no-retry form (unless it already is, or has none).

    Called by :meth:`taskflow_exclusive.airflow.host.AirflowHost.refuse` for every refusal
    inside a running Airflow task.
    """
    form = _NO_RETRY_FORMS.get(type(refused))
    if form is None:
        return
    failure = errors._rebuild(form, refused.message + NO_RETRY_NOTE, refused._facts)
    raise failure.with_traceback(refused.__traceback__) from None
