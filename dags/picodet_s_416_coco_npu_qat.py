"""Airflow DAG from recipes/picodet_s_416_coco_npu_qat.yaml (see that file for the tutorial it reproduces)."""

from npuflow.operators.dag_factory import build_dag

dag = build_dag("picodet_s_416_coco_npu_qat")
