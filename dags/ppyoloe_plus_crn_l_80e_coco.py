"""Airflow DAG: PP-YOLOE+-l on COCO 2017 (PaddleDetection, 8 x Ascend 910B), from recipes/ppyoloe_plus_crn_l_80e_coco.yaml."""

from npuflow.operators.dag_factory import build_dag

dag = build_dag("ppyoloe_plus_crn_l_80e_coco")
