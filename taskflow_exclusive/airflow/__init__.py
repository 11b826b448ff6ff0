"""The Airflow floor: everything that knows about Airflow, on top of the core.

- :mod:`~taskflow_exclusive.airflow.decorators`: ``@exclusive_task`` (``@task.exclusive``)
  and ``@exclusive_output``;
- :mod:`~taskflow_exclusive.airflow.operator`: the decorated operator behind them;
- :mod:`~taskflow_exclusive.airflow.inputs`: ``Claimed[T]`` parameters;
- :mod:`~taskflow_exclusive.airflow.results`: a result as one, per-item or per-key handles;
- :mod:`~taskflow_exclusive.airflow.xcom`: the ``ExclusiveXCom`` backend;
- :mod:`~taskflow_exclusive.airflow.serde`, :mod:`~taskflow_exclusive.airflow.plugin`:
  handles through Airflow's XCom serde in every process;
- :mod:`~taskflow_exclusive.airflow.provider`: ``@task.exclusive`` and the
  ``[taskflow_exclusive]`` config section;
- :mod:`~taskflow_exclusive.airflow.host`, :mod:`~taskflow_exclusive.airflow.failures`:
  Airflow as the core's host (Variables, Connections, the running task, refusals
  that fail a task without retries);
- :mod:`~taskflow_exclusive.airflow._compat`: every version-gated or private Airflow use.

Importing this package imports nothing from Airflow.
"""
