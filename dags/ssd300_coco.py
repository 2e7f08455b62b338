"""Airflow DAG from recipes/ssd300_coco.yaml (see that file for the tutorial it reproduces)."""

from npuflow.operators.dag_factory import build_dag

dag = build_dag("ssd300_coco")
