"""The ``taskflow-exclusive`` command (:mod:`~taskflow_exclusive.cli.main`) and its demo
(:mod:`~taskflow_exclusive.cli.demo`)."""
