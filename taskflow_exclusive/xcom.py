"""Where ``airflow.cfg`` files name the XCom backend: ``taskflow_exclusive.xcom.ExclusiveXCom``.

The backend lives in :mod:`taskflow_exclusive.airflow.xcom`; this path stays
because deployments' configuration names it (``[core] xcom_backend``).
"""

from taskflow_exclusive.airflow.xcom import ExclusiveXCom, claim_task_xcom

__all__ = ["ExclusiveXCom", "claim_task_xcom"]
