"""Examples shipped with the package.

- :mod:`taskflow_exclusive.examples.orders`: the pipeline's plain functions
  (no Airflow), shared by the DAG and the notebook in ``notebooks/``;
- ``dags/orders_pipeline.py``: the same pipeline as an Airflow DAG;
- :mod:`taskflow_exclusive.cli.demo`: ``taskflow-exclusive demo`` runs that
  DAG with ``dag.test()`` and prints what each task produced and claimed.
"""
