"""Airflow DAG from recipes/yolor_p6_coco.yaml (see that file for the tutorial it reproduces)."""

from npuflow.operators.dag_factory import build_dag

dag = build_dag("yolor_p6_coco")
