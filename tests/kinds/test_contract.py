"""What every stage kind must say about itself; a new kind passes these by being a module in npuflow/kinds."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from npuflow.kinds import registry
from npuflow.kinds.base import Result, StageKind
from npuflow.plan import BUILTIN_VARIABLES, build_plan
from npuflow.recipe import list_recipes, load_recipe

KINDS = sorted(registry())


def test_the_registry_finds_every_kind_module() -> None:
    assert set(KINDS) == {"prepare_dataset", "validate_dataset", "train", "export", "compress", "evaluate",
                          "benchmark", "infer", "report", "onnx_export", "qat", "gate", "test_checkpoint", "track",
                          "promote"}


@pytest.mark.parametrize("name", KINDS)
def test_a_kind_declares_what_it_consumes_and_produces(name: str) -> None:
    kind = registry()[name]
    assert isinstance(kind, StageKind) and kind.name == name and kind.description
    assert kind.produces is not None and issubclass(kind.produces, Result) and dataclasses.is_dataclass(kind.produces)
    for role in kind.consumes.values():
        assert issubclass(role.result, Result)
    jsonschema.Draft202012Validator.check_schema(kind.settings_schema)
    assert not set(kind.builtins) & BUILTIN_VARIABLES  # a kind's variables never shadow the plan's


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_is_used_by_a_recipe(name: str) -> None:
    used = {spec["kind"] for dag in list_recipes() for spec in load_recipe(dag).stages.values()}
    assert name in used


def test_only_stages_that_hold_cards_get_preflight_resume_and_the_pool() -> None:
    assert {n for n, k in registry().items() if k.holds_cards} == {"train", "compress", "qat"}


def test_project_kinds_build_their_command_and_toolkit_kinds_take_the_recipes() -> None:
    toolkit = {n for n, k in registry().items() if k.toolkit}
    assert toolkit == {"train", "export", "compress", "evaluate", "infer", "test_checkpoint"}
    for dag in ("picodet_s_416_coco_npu_qat", "ssd300_coco"):
        plan = build_plan(load_recipe(dag), {"profile": "smoke"}, run_id="contract")
        for stage in plan.stages:
            if stage.kind in toolkit:
                continue
            # Built in code: the project's own program (under torchrun where it holds cards), never a recipe's argv.
            argv = stage.argv[stage.argv.index("--tee") + 2:] if registry()[stage.kind].holds_cards else stage.argv[1:]
            assert argv[0] == "-m" and argv[1].startswith("npuflow."), stage.argv
