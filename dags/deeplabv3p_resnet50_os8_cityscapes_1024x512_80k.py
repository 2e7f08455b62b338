"""Airflow DAG from recipes/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k.yaml (see it for the tutorial)."""

from npuflow.operators.dag_factory import build_dag

dag = build_dag("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k")
