"""System tests: real Airflow deployments on loopback (see conftest.py and deployment.py)."""
