"""Recipe schema: every shipped recipe is valid; a bad one fails naming the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from npuflow.recipe import RecipeError, list_recipes, load_recipe, load_recipe_file, recipes_dir

EXPECTED_DAGS = {
    "ppyoloe_plus_crn_l_80e_coco",
    "deeplabv3p_resnet50_os8_cityscapes_1024x512_80k",
    "picodet_s_416_coco_npu_qat",
    "yolor_p6_coco",
    "ssd300_coco",
}


def test_all_five_recipes_present_and_valid() -> None:
    assert set(list_recipes()) == EXPECTED_DAGS
    for dag_id in EXPECTED_DAGS:
        recipe = load_recipe(dag_id)
        assert recipe.dag_id == dag_id
        assert "production" in recipe.profiles


def _base() -> dict:
    return yaml.safe_load((recipes_dir() / "ppyoloe_plus_crn_l_80e_coco.yaml").read_text())


def _set(data: dict, path: list, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(["toolkit"], _DELETE, "'toolkit' is a required property", id="missing-toolkit"),
        pytest.param(["stages", "train", "argv", 1], 5, "stages.train.argv[1]", id="argv-not-a-string"),
        pytest.param(["profiles", "production", "device", "kind"], "tpu", "profiles.production.device.kind",
                     id="unknown-device-kind"),
        pytest.param(["profiles", "production", "device", "count"], 0, "profiles.production.device.count",
                     id="zero-cards"),
        pytest.param(["stages", "train", "kind"], "deploy", "stages.train.kind", id="unknown-stage-kind"),
        pytest.param(["default_profile"], "nightly", "default_profile", id="default-profile-missing"),
        pytest.param(["stages", "train", "needs"], ["nope"], "stages.train.needs: 'nope' names no stage",
                     id="needs-names-no-stage"),
        pytest.param(["stages", "validate_dataset", "needs"], ["report"], "stages.needs: a cycle among",
                     id="needs-cycle"),
        pytest.param(["stages", "export", "needs"], ["prepare_dataset"],
                     "stages.export.needs: 'prepare_dataset' is a prepare_dataset stage, whose result a export stage "
                     "does not consume", id="needs-wrong-kind"),
        pytest.param(["stages", "benchmark_int8", "needs"], ["prepare_dataset"],
                     "a benchmark stage needs a stage producing ModelResult (its 'model' input)",
                     id="needs-missing-role"),
        pytest.param(["stages", "report", "argv"], ["echo"], "stages.report: a report stage builds its command in code",
                     id="project-stage-with-argv"),
        pytest.param(["stages", "compress", "settings"], {"config": 3}, "stages.compress.settings: config",
                     id="kind-settings-checked"),
        pytest.param(["published", "bbox_map"], {"value": 1, "source": "x", "measured_as": "report.bbox_map"},
                     "published.bbox_map.measured_as: a report stage measures []", id="measured-as-not-a-metric"),
        pytest.param(["vars", "run_dir"], "/tmp", "vars", id="var-shadows-a-builtin"),
        pytest.param(["vars", "Bad-Name"], "x", "vars", id="bad-var-name"),
        pytest.param(["published", "bbox_map"], {"value": "high", "source": "x", "measured_as": "train.train_ips"},
                     "published.bbox_map.value",
                     id="published-not-a-number"),
        pytest.param(["extra_key"], 1, "extra_key", id="unknown-top-level-key"),
    ],
)
def test_bad_recipe_names_file_and_field(tmp_path: Path, path: list, value, message: str) -> None:
    bad = tmp_path / "ppyoloe_plus_crn_l_80e_coco.yaml"
    bad.write_text(yaml.safe_dump(_set(_base(), path, value)))
    with pytest.raises(RecipeError) as err:
        load_recipe_file(bad)
    assert str(bad) in str(err.value)
    assert message in str(err.value)


def test_dag_id_must_match_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "other_name.yaml"
    bad.write_text(yaml.safe_dump(_base()))
    with pytest.raises(RecipeError, match="must equal the file name"):
        load_recipe_file(bad)


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("dag_id: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe_file(bad)


def test_unknown_recipe_lists_known_ones() -> None:
    with pytest.raises(RecipeError, match="ppyoloe_plus_crn_l_80e_coco"):
        load_recipe("no_such_model")


def test_recipe_naming_an_unknown_dataset_spec_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ppyoloe_plus_crn_l_80e_coco.yaml"
    bad.write_text(yaml.safe_dump(_set(_base(), ["dataset", "spec"], "imagenet")))
    with pytest.raises(RecipeError, match=r"no dataset spec 'imagenet'.*known: .*coco2017"):
        load_recipe_file(bad)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(["download", "archives", 0, "md5"], "not-an-md5", "download.archives[0].md5", id="bad-md5"),
        pytest.param(["download", "archives", 0, "url"], "ftp://x", "download.archives[0].url", id="bad-url"),
        pytest.param(["format"], "voc", "format", id="unknown-format"),
        pytest.param(["expect", "images", "val2017"], 0, "expect.images.val2017", id="zero-count"),
        pytest.param(["derive"], ["make_magic"], "derive[0]", id="unknown-derive-step"),
    ],
)
def test_bad_dataset_spec_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: list, value,
                                              message: str) -> None:
    from npuflow.recipe import PROJECT_ROOT, load_dataset_spec

    (tmp_path / "datasets").mkdir()
    spec = yaml.safe_load((PROJECT_ROOT / "recipes" / "datasets" / "coco2017.yaml").read_text())
    bad = tmp_path / "datasets" / "coco2017.yaml"
    bad.write_text(yaml.safe_dump(_set(spec, path, value)))
    monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path))
    with pytest.raises(RecipeError) as err:
        load_dataset_spec("coco2017")
    assert str(bad) in str(err.value) and message in str(err.value)
