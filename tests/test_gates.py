"""Gates, trends, scaling and TIPC records as plain functions (the e2e runs are in tests/test_reports.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from npuflow import gates, history
from npuflow.recipe import RecipeError, load_recipe, load_recipe_file
from npuflow.report_html import provenance_rows

YOLOR = "yolor_p6_coco"


def _recipe() -> dict:
    return load_recipe(YOLOR).data


def test_production_is_held_to_the_published_value_less_the_tolerance() -> None:
    verdicts = {g["gate"]: g for g in gates.evaluate(_recipe(), "production", {
        "test.bbox_map": 50.0, "benchmark_fp32.bbox_map": 50.0, "benchmark_int8.bbox_map": 48.5,
        "train.train_ips_per_card": 17.0, "benchmark_fp32.latency_p50_ms": 20.0})}
    bbox = verdicts["fp32_eval_bbox_map"]
    assert bbox["threshold"] == pytest.approx(51.6 * 0.98) and not bbox["passed"]
    assert bbox["missed_by"] == pytest.approx(51.6 * 0.98 - 50.0)
    assert "test.bbox_map = 50, needs >= 50.57 (published bbox_map = 51.6 - 2%): missed by 0.568" in bbox["reason"]
    drop = verdicts["int8_drop"]  # INT8 minus FP32, in points
    assert drop["value"] == pytest.approx(-1.5) and not drop["passed"] and drop["threshold"] == -1.0
    assert verdicts["train_ips_per_card"]["passed"] and verdicts["fp32_latency_p50"]["passed"]


def test_a_profile_sets_its_own_bounds_and_an_unmeasured_gate_misses() -> None:
    verdicts = {g["gate"]: g for g in gates.evaluate(_recipe(), "smoke", {"test.bbox_map": 0.5})}
    assert verdicts["fp32_eval_bbox_map"]["passed"] and verdicts["fp32_eval_bbox_map"]["threshold"] == 0.0
    assert not verdicts["int8_drop"]["passed"] and "was not measured" in verdicts["int8_drop"]["reason"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["gates"]["int8_drop"].update(minus="benchmark_fp32.nope"),
     "gates.int8_drop.minus: a benchmark stage measures"),
    (lambda d: d["gates"]["fp32_eval_bbox_map"].update(at_least={"published": "nope"}),
     "gates.fp32_eval_bbox_map.at_least.published: 'nope' is not a published metric"),
    (lambda d: d["profiles"]["smoke"]["gates"].update(nope={"at_least": 1}), "profiles.smoke.gates.nope: no gate"),
    (lambda d: d["stages"]["gate_fp32"]["settings"].update(gates=["nope"]), "stages.gate_fp32.settings.gates: no gate"),
])
def test_a_gate_naming_what_does_not_exist_is_refused_with_the_field(tmp_path: Path, edit, message: str) -> None:
    data = yaml.safe_load(load_recipe(YOLOR).path.read_text())
    edit(data)
    path = tmp_path / f"{YOLOR}.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        load_recipe_file(path)


def test_trends_flag_a_regression_beyond_the_tolerance_in_the_metrics_direction() -> None:
    previous = [{"run_id": "r2", "measured": {"benchmark_fp32.bbox_map": 10.0, "benchmark_fp32.latency_p50_ms": 1.0}},
                {"run_id": "r1", "measured": {"benchmark_fp32.bbox_map": 8.0}}]
    rows = {t["metric"]: t for t in history.trends(
        {"benchmark_fp32.bbox_map": 9.0, "benchmark_fp32.latency_p50_ms": 1.04, "train.train_ips": 5.0},
        previous, tolerance=0.05)}
    assert rows["benchmark_fp32.bbox_map"]["regression"] and rows["benchmark_fp32.bbox_map"]["previous_run"] == "r2"
    assert rows["benchmark_fp32.bbox_map"]["mean_previous"] == 9.0 and rows["benchmark_fp32.bbox_map"]["runs"] == 2
    assert not rows["benchmark_fp32.latency_p50_ms"]["regression"]  # 4% slower: inside the tolerance
    assert "train.train_ips" not in rows  # nothing to compare with


def test_scaling_efficiency_uses_a_one_card_run_else_the_published_one_card_figure() -> None:
    published = _recipe()["published"]
    assert history.scaling(150.0, 8, published, "production", [])["efficiency"] == pytest.approx(150 / (8 * 18.9))
    one_card = [{"run_id": "r1", "scaling": {"cards": 1, "images_per_s": 20.0}}]
    assert history.scaling(150.0, 8, published, "smoke", one_card)["efficiency"] == pytest.approx(150 / 160)
    assert "efficiency" not in history.scaling(150.0, 8, published, "smoke", [])


def test_a_tipc_record_is_appended_once_per_run(tmp_path: Path) -> None:
    report = {"dag_id": YOLOR, "run_id": "r1", "profile": "smoke", "generated_at": "t",
              "scaling": {"cards": 2, "images_per_s": 100.0, "images_per_s_per_card": 50.0},
              "train": {"train": {"metrics": {"eval": {"bbox_map": 0.1}}}},
              "provenance": {"recipe_digest": "sha256:r", "npuflow_version": "0.1", "toolkit": None},
              "dataset": {"validate_dataset": {"content": {"digest": "sha256:d"}}}}
    record = history.tipc_record(report, {"device": {"nnodes": 1, "count": 2}, "variables": {"batch_per_card": "4"}})
    assert record == {"model_name": YOLOR, "batch_size": "4", "fp_item": "fp32", "run_mode": "DP", "device_num": "N1C2",
                      "ips": 100.0, "speed_unit": "samples/s", "convergence_key": "bbox_map", "convergence_value": 0.1,
                      "run_id": "r1", "profile": "smoke", "generated_at": "t",
                      "provenance": {"recipe_digest": "sha256:r", "npuflow_version": "0.1", "toolkit": None,
                                     "toolkit_commit": None, "toolkit_local_changes": None,
                                     "dataset_digest": "sha256:d", "frameworks": {}, "images": {}}}
    path = tmp_path / "tipc_records.jsonl"
    assert history.append_record(path, record) and not history.append_record(path, record)
    assert [json.loads(line)["run_id"] for line in path.read_text().splitlines()] == ["r1"]


def test_a_run_names_the_inputs_that_changed_since_the_previous_run_and_the_runs_with_the_same() -> None:
    def report(run_id: str, dataset: str, torch: str, image: str | None = None) -> dict:
        envs = {"train": {"python": "3.11", "distributions": {"torch": torch}},
                "export": {"image": "x:smoke", "image_id": image} if image else None}
        content = {"digest": dataset, "files": 3, "hashed": 0, "reused": 3}
        return {"run_id": run_id, "dataset": {"validate_dataset": {"content": content}},
                "provenance": {"recipe_digest": "sha256:r", "npuflow_version": "0.1", "toolkit": None,
                               "environments": envs}}

    now = report("r3", "sha256:" + "d" * 64, "2.5.1", "sha256:img")
    assert history.compare_inputs(now, []) is None
    previous = [report("r2", "sha256:" + "e" * 64, "2.5.1", "sha256:img"), report("r1", "sha256:" + "d" * 64,
                                                                                      "2.5.1", "sha256:img")]
    inputs = history.compare_inputs(now, previous)
    assert inputs == {"previous_run": "r2", "changed": {"dataset_digest": ["sha256:" + "e" * 64, "sha256:" + "d" * 64]},
                      "same_inputs_runs": ["r1"]}
    moved = history.compare_inputs(report("r4", "sha256:" + "d" * 64, "2.6.0", "sha256:new"), previous)
    assert moved["changed"] == {"frameworks": [{"torch": "2.5.1"}, {"torch": "2.6.0"}],
                                "images": [{"export": "sha256:img"}, {"export": "sha256:new"}],
                                "dataset_digest": ["sha256:" + "e" * 64, "sha256:" + "d" * 64]}
    rows = dict(provenance_rows({**now, "inputs": inputs}))
    assert rows["inputs against run r2"] == "changed: dataset_digest: sha256:eeeeeeeeeeee… → sha256:dddddddddddd…"
    assert rows["earlier runs with these inputs"] == "r1"
    assert rows["ran in image export"] == "x:smoke = sha256:img"


def test_a_published_throughput_is_only_compared_with_a_run_on_as_many_cards(tmp_path: Path) -> None:
    from npuflow.report import build_report
    from npuflow.rundir import write_stage_result

    run_dir = tmp_path / YOLOR / "r1"
    (run_dir / "train").mkdir(parents=True)
    for cards in (8, 2):
        (run_dir / "plan.json").write_text(json.dumps({"run_id": "r1", "profile": "production",
                                                       "device": {"count": cards, "nnodes": 1}}))
        write_stage_result(run_dir / "train", {"ok": True, "kind": "train", "summary": "s", "result": {
            "metrics": {"ips_global_median": 150.0, "world_size": cards, "eval": {}}, "outputs": {}}})
        rows = {c["metric"]: c for c in build_report(run_dir, _recipe())["published_comparison"]}
        assert rows["train_fps_1p"]["measured"] is None and "not compared" in rows["train_fps_1p"]["setting"]
        if cards == 8:
            assert rows["train_fps_8p"]["ratio"] == pytest.approx(150 / 143.3)
        else:
            assert rows["train_fps_8p"]["measured"] is None
