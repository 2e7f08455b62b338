"""Every DAG with a smoke profile, end to end through real Airflow: generated COCO, real training under
paddle.distributed.launch or torchrun (2 CPU ranks) or the YOLOR port's own train.py (one CPU process), and where
the recipe has them the toolkit's export and test (or the project's ONNX export), the Paddle Inference (or
onnxruntime) benchmark, compression (ACT or torch QAT) and the report."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from npuflow.kinds import kind
from npuflow.recipe import list_recipes, load_recipe
from npuflow.toolkits.checkout import checkout_dir
from tests.conftest import VENV_BIN, embedded_airflow_env, scratch
from tests.test_toolkits import PROJECT_PROGRAMS, STAND_INS

DAG = "ppyoloe_plus_crn_l_80e_coco"
SMOKE_DAGS = [d for d in list_recipes() if "smoke" in load_recipe(d).profiles]


def _dags_test(env: dict, conf: dict, dag_id: str = DAG) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=1800)  # a safety net: PP-YOLOE+ takes ~13 min


# Two smoke runs at a time, each in its own embedded Airflow: most of a PicoDet or PP-YOLOE+ run (~13 min each
# alone on 2 cores) is ACT's QAT graph passes in one Python thread, so two runs overlap on CI's two cores.
SMOKE_AT_ONCE = 2


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The smoke run of every DAG this session selected, started when the first of their tests asks, the ACT
    ones first (they are the longest); each test waits for its own run only."""
    selected = [item.callspec.params["dag_id"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_smoke_dag_runs_end_to_end"]
    selected.sort(key=lambda d: "compress" not in {s["kind"] for s in load_recipe(d).stages.values()})

    def run(env: dict[str, str], dag_id: str) -> subprocess.CompletedProcess:
        embedded_airflow_env(Path(env["AIRFLOW_HOME"]).parent)  # migrate in the worker, not while collecting
        return _dags_test(env, {"profile": "smoke"}, dag_id)

    runs: dict[str, tuple[dict[str, str], Future]] = {}
    with contextlib.ExitStack() as homes, ThreadPoolExecutor(max_workers=SMOKE_AT_ONCE) as pool:
        for dag_id in selected:  # the pool exits once every run has finished, then the homes are removed
            env = embedded_airflow_env(homes.enter_context(scratch(tmp_path_factory, dag_id)), migrate=False)
            runs[dag_id] = (env, pool.submit(run, env, dag_id))
        yield runs


def test_the_first_pipeline_has_a_smoke_profile() -> None:
    assert DAG in SMOKE_DAGS


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", SMOKE_DAGS)
def test_smoke_dag_runs_end_to_end(smoke_runs: dict, dag_id: str) -> None:
    airflow_env, future = smoke_runs[dag_id]
    proc = future.result()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = list((Path(airflow_env["NPUFLOW_RUNS_DIR"]) / dag_id).iterdir())
    assert len(runs) == 1
    run = runs[0]
    report = json.loads((run / "report.json").read_text())
    assert report["profile"] == "smoke" and report["not_run"] == []
    assert all(stage["ok"] for stage in report["stages"].values())

    recipe = load_recipe(dag_id)
    kinds = {name: spec["kind"] for name, spec in recipe.stages.items()}
    train = report["train"]["train"]["metrics"]
    assert train["world_size"] == recipe.data["profiles"]["smoke"]["device"]["count"] and train["train_steps"] > 0
    assert train["losses_finite"] and all(math.isfinite(v) for v in train["last_losses"].values())
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    if recipe.log_format == "mmdet_json":  # no throughput field: the port's calc_fps.py, or the step times
        steps = [m["batch_cost"] for m in metrics if m["type"] == "train"]
        assert len(steps) == train["train_steps"] > 1
        batch = int(recipe.data["profiles"]["smoke"]["vars"]["default_batch_per_card"])
        # calc_fps.py skips the first 50 iterations of each epoch; the smoke epochs have 2 (ZeroDivisionError).
        assert train["fps_source"].startswith("calc_fps.py gave no number (ZeroDivisionError"), train["fps_source"]
        assert report["measured"]["train.train_ips"] == pytest.approx(2 * batch / (sum(steps[1:]) / len(steps[1:])))
    else:
        assert any(m["type"] == "train" and m["ips_global"] > 0 for m in metrics)
    if dag_id == DAG:  # make demo's DAG: the model visibly learns, and INT8 keeps what FP32 learnt
        losses = [m["losses"]["loss"] for m in metrics if m["type"] == "train"]
        assert sum(losses[-10:]) < 0.9 * sum(losses[:10]), losses
        measured = report["measured"]
        assert measured["benchmark_fp32.bbox_map"] >= 5.0, measured  # mAP in %, 12.5 when measured
        assert measured["benchmark_int8.bbox_map"] >= measured["benchmark_fp32.bbox_map"] - 5.0, measured
    rank_logs = {p.name for p in (run / "train" / "log").rglob("*") if p.is_file()}
    if recipe.log_format == "ppdet":
        assert "bbox_map" in train["eval"] and train["evaluations"] >= 1  # COCO eval ran during training
        assert {"workerlog.0", "workerlog.1"} <= rank_logs
    elif recipe.log_format == "paddleseg":
        assert 0.0 <= train["eval"]["miou"] <= 1.0  # PaddleSeg's [EVAL] during training
        assert {"workerlog.0", "workerlog.1"} <= rank_logs
        assert (Path(report["train"]["train"]["outputs"]["best_model"]).parent.parent / "iter_20").is_dir()
    elif recipe.log_format == "yolor":  # the port's train.py evaluates nothing; its test.py does, in the test stage
        assert train["evaluations"] == 0 and 0.0 <= report["measured"]["test.bbox_map"] <= 100.0
        assert (Path(report["train"]["train"]["outputs"]["checkpoint"]).parent / "epoch_000.pt").is_file()
    else:  # torchrun --log-dir: <id>/attempt_0/<local_rank>/stdout.log
        assert len(list((run / "train" / "log").glob("*/attempt_0/1/stdout.log"))) == 1
        assert 0.0 <= train["eval"]["bbox_map"] <= 1.0  # MMDetection's COCO evaluation
    if recipe.log_format == "mmdet_json":  # the train stage followed work_dir/<ts>.log.json
        work_dir = Path(report["train"]["train"]["outputs"]["checkpoint"]).parent
        log_json = next(work_dir.glob("*.log.json")).read_text().splitlines()
        assert json.loads(log_json[0])["exp_name"] and len(log_json) == 1 + train["train_steps"] + train["evaluations"]
        assert (work_dir / "latest.pth").resolve().name == f"epoch_{train['last_epoch']}.pth"

    if recipe.toolkit is not None:
        _check_toolkit_code(run, dag_id)
    # Provenance: the pinned recipe, the toolkit's commit and the dataset's content digest, in the report too.
    prov = report["provenance"]
    assert prov["recipe_digest"].startswith("sha256:") and prov["npuflow_version"]
    if recipe.toolkit is not None:
        assert prov["toolkit"]["pinned_commit"] == recipe.toolkit.commit(recipe.toolkit_ref)
        assert prov["toolkit"]["ref"] == recipe.toolkit_ref
    content = next(iter(report["dataset"].values()))["content"]
    assert content["digest"].startswith("sha256:") and content["files"] > 0
    train_env = prov["environments"]["train"]  # what the training's own Python resolved, with its environment
    if recipe.log_format == "ppdet":
        checkout = checkout_dir(recipe.toolkit.name, recipe.toolkit_ref).resolve()
        assert Path(train_env["packages"]["ppdet"]).resolve().is_relative_to(checkout), train_env
        assert train_env["distributions"]["paddlepaddle"]
    markdown = (run / "report.md").read_text()
    assert "## Provenance" in markdown and content["digest"] in markdown and prov["recipe_digest"] in markdown

    if "onnx_export" in kinds.values():
        _check_onnx(report["models"]["export"], quantized=False)
    if "export" in kinds.values():
        export = {Path(p).name for p in report["models"]["export"]["files"].values()}
        assert "model.pdiparams" in export and export & {"infer_cfg.yml", "deploy.yaml"}
        assert export & {"model.pdmodel", "model.json"}
        for path in report["models"]["export"]["files"].values():
            assert Path(path).stat().st_size > 0
    for name in (n for n, k in kinds.items() if k == "benchmark"):
        bench = report["benchmarks"][name]
        lat = bench["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert bench["throughput_ips"] > 0 and bench["settings"]["iters"] == 20
        acc = bench["accuracy"]
        if "miou" in acc:  # segmentation: against every val pixel's train id, as PaddleSeg's own eval
            assert 0.0 <= acc["miou"] <= 1.0 and 0.0 < acc["pixel_acc"] <= 1.0 and acc["pixels"] > 0
            assert len(acc["class_iou"]) == 19
            assert acc["miou"] == pytest.approx(train["eval"]["best_miou"], abs=1e-3)  # the exported best_model
        else:
            assert 0.0 <= acc["map"] <= 1.0
            # The port's YOLOR-P6 (37 M parameters) learns nothing in the smoke's 8 steps: train.py warms the
            # learning rate up over max(3 epochs, 1000 iterations). Its export is trace-safe for that (yolor.py).
            assert acc["detections"] > 0 or recipe.log_format == "yolor"
    if {"compress", "qat"} & set(kinds.values()):
        _check_compression(run, report, kinds)
    assert (run / "report.md").read_text().startswith(f"# {load_recipe(dag_id).data['title']}")


def _check_toolkit_code(run: Path, dag_id: str) -> None:
    """Every toolkit stage ran in the pinned checkout and executed a script of it (or, named in PROJECT_PROGRAMS
    with the reason, the project's program over the toolkit's code): the stage's own record of argv and cwd."""
    recipe = load_recipe(dag_id)
    tree = checkout_dir(recipe.toolkit.name, recipe.toolkit_ref).resolve()
    for name, spec in recipe.stages.items():
        if not kind(spec["kind"]).toolkit:
            continue
        done = json.loads((run / name / "result.json").read_text())
        if (dag_id, name) in STAND_INS:  # the project's stand-in, with the production argv (tests/test_ssd_port.py)
            assert done["ok"] and Path(done["cwd"]).resolve().is_relative_to(Path(__file__).parents[1] / "toolkits")
            continue
        assert done["ok"] and Path(done["cwd"]).resolve().is_relative_to(tree), (name, done["cwd"])
        scripts = [Path(done["cwd"]) / a for a in done["argv"] if a.endswith(".py")]
        assert scripts and all(p.is_file() for p in scripts), (name, done["argv"])
        if (dag_id, name) not in PROJECT_PROGRAMS:
            assert all(p.resolve().is_relative_to(tree) for p in scripts), (name, scripts)
        paths = done["env"].get("PYTHONPATH", "").split(":")
        assert any(p.startswith(str(checkout_dir(recipe.toolkit.name, recipe.toolkit_ref))) for p in paths), paths


def _check_compression(run: Path, report: dict, kinds: dict[str, str]) -> None:
    """The INT8 model is really quantized, benchmarked like the FP32 one, and the report compares the two."""
    int8 = report["models"]["compress"]
    assert int8["precision"] == "int8" and int8["quantize_ops"] > 0
    if kinds["compress"] == "qat":  # QAT from the trained checkpoint, as the ONNX export
        assert int8["source"] == report["models"]["export"]["source"] == "train"
        _check_onnx(int8, quantized=True)
    else:
        source = report["models"][int8["source"]]
        assert kinds[int8["source"]] == "export"
        deployment = set(source["files"]) - {"model", "params"}  # infer_cfg.yml / deploy.yaml, copied beside INT8
        assert deployment and all(Path(int8["files"][f]).read_text() == Path(source["files"][f]).read_text()
                                  for f in deployment)
    fp32_bench, int8_bench = report["benchmarks"]["benchmark_fp32"], report["benchmarks"]["benchmark_int8"]
    assert fp32_bench["settings"]["quantize_ops"] == 0 and int8_bench["settings"]["quantize_ops"] > 0
    own = ("quantize_ops", "int8_execution")  # what the model is, not how it was measured
    assert {k: v for k, v in fp32_bench["settings"].items() if k not in own} == \
        {k: v for k, v in int8_bench["settings"].items() if k not in own}  # same program, data, settings
    rows = {r["stage"]: r for r in report["model_comparison"]}
    assert rows["benchmark_fp32"]["precision"] == "fp32" and rows["benchmark_int8"]["precision"] == "int8"
    assert "latency_p50_ratio" in rows["benchmark_int8"]["delta"]
    if "eval_int8" in kinds:
        assert 0.0 <= report["measured"]["eval_int8.bbox_map"] <= 100.0  # the toolkit's eval.py on the INT8 model
    md = (run / "report.md").read_text()
    assert "| export | fp32 |" in md and "| compress | int8 |" in md and "| compress vs FP32 |" in md
    assert fp32_bench["settings"]["int8_execution"] is None  # the report says whether INT8 kernels ran
    if kinds["compress"] == "compress":  # Paddle Inference
        assert "| compress: INT8 execution | int8 kernels (oneDNN) |" in md
    else:  # onnxruntime's profile of a run: the QDQ pairs fused into QLinearConv on the CPU provider
        assert int8_bench["settings"]["int8_execution"].startswith("int8 kernels: QLinearConv x")
        assert "| compress: INT8 execution | int8 kernels: QLinearConv x" in md
    assert Path(int8["files"]["model"]).is_relative_to(run / "compress")  # inside its stage's folder


def _check_onnx(model: dict, quantized: bool) -> None:
    """Read with onnx itself (not the project's counter): a whole detector (NMS inside) that onnxruntime loads,
    with QuantizeLinear/DequantizeLinear nodes exactly when it is the INT8 model."""
    import onnx
    import onnxruntime

    def ops(graph: onnx.GraphProto) -> list[str]:  # every node, in If/Loop bodies too
        return [op for n in graph.node for op in [n.op_type, *(o for a in n.attribute for g in [a.g, *a.graphs]
                                                                  for o in ops(g))]]

    path = model["files"]["model"]
    found = ops(onnx.load(path).graph)
    assert "NonMaxSuppression" in found
    qdq = sum(op in ("QuantizeLinear", "DequantizeLinear") for op in found)
    assert (qdq > 0) == quantized and (not quantized or qdq == model["quantize_ops"])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]


def test_bad_param_is_refused_before_the_run(airflow_env: dict) -> None:
    proc = _dags_test(airflow_env, {"profile": "smoke", "epochs": 0})
    assert proc.returncode != 0
    assert "epochs" in proc.stdout + proc.stderr
    assert not (Path(airflow_env["NPUFLOW_RUNS_DIR"]) / DAG).exists()


def test_unknown_conf_key_fails_the_first_task_with_the_allowed_keys(airflow_env: dict) -> None:
    proc = _dags_test(airflow_env, {"profile": "smoke", "epoch": 3})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown parameter(s) ['epoch']" in out and "allowed" in out
