"""A deployment DAG scheduled on a model asset: it runs whenever the PP-YOLOE+ DAG exports a new model.

Copy it into the dags folder next to the npuflow DAGs. The export task's asset event carries where the model
is (``extra["outputs"]``: ``model``, ``params``, ``infer_cfg``) and which run made it.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, task

EXPORTED = Asset("model://ppyoloe_plus_crn_l_80e_coco/exported")

with DAG(dag_id="deploy_ppyoloe_plus", schedule=[EXPORTED], catchup=False, tags=["deploy", "example"]):

    @task
    def deploy(*, triggering_asset_events=None) -> dict:
        event = triggering_asset_events[EXPORTED][-1]  # the newest export
        extra = event.extra
        print(f"new model from {extra['dag_id']} run {extra['run_id']}: {extra['outputs']['params']}")
        # Here: copy the model files to the serving hosts, reload the service, run a canary ...
        return {"run_id": extra["run_id"], "params": extra["outputs"]["params"]}

    deploy()
