"""Recipes: one YAML per tutorial, validated against ``recipe.schema.json``.

A recipe is pure data. Nothing in this package branches on a model's name; everything that differs between
models (commands, paths, device counts, published numbers) is read from here. Loading is cheap and imports
only PyYAML and jsonschema, so DAG files may call it at parse time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = Path(__file__).with_name("recipe.schema.json")


class RecipeError(ValueError):
    """A recipe file is missing, unreadable or does not match the schema; the message names file and field."""


def recipes_dir() -> Path:
    return Path(os.environ.get("NPUFLOW_RECIPES_DIR", PROJECT_ROOT / "recipes"))


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``data`` is the parsed YAML; the properties are the parts code reads often."""

    path: Path
    data: dict[str, Any]

    @property
    def dag_id(self) -> str:
        return self.data["dag_id"]

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.data["profiles"]

    @cached_property
    def order(self) -> list[str]:
        """Stage names, each after the stages it needs."""
        from npuflow.graph import topological

        return topological(self.stages, self.path.name)

    @cached_property
    def inputs(self) -> dict[str, dict[str, list[str]]]:
        """Stage -> input role -> the upstream stages that fill it."""
        from npuflow.graph import bind_inputs

        return bind_inputs(self.stages, self.path.name)

    @property
    def default_profile(self) -> str:
        """The deployment may pick another default (``NPUFLOW_DEFAULT_PROFILE``) when the recipe has it."""
        wanted = os.environ.get("NPUFLOW_DEFAULT_PROFILE")
        if wanted and wanted in self.profiles:
            return wanted
        return self.data["default_profile"]

    @property
    def toolkit(self) -> Any:
        """The toolkit component (npuflow/toolkits/) the recipe names, or None for a toolkit not modelled yet."""
        from npuflow.toolkits import registry

        return registry().get(self.data["toolkit"]["name"])

    @property
    def toolkit_ref(self) -> str:
        return self.data["toolkit"]["ref"]

    @property
    def log_format(self) -> str:
        """The recipe's ``log_format``, else its toolkit's."""
        if "log_format" in self.data:
            return self.data["log_format"]
        if self.toolkit is None:
            raise RecipeError(f"{self.path.name}: log_format is required for toolkit {self.data['toolkit']['name']!r}")
        return self.toolkit.log_format

    @property
    def dataset(self) -> dict[str, Any]:
        """The dataset spec the recipe names (``recipes/datasets/<spec>.yaml``)."""
        return load_dataset_spec(self.data["dataset"]["spec"])

    def profile(self, name: str) -> dict[str, Any]:
        try:
            return self.profiles[name]
        except KeyError:
            raise RecipeError(
                f"{self.path.name}: no profile {name!r}; this recipe has {sorted(self.profiles)}"
            ) from None


@cache
def _validator(schema_path: Path = SCHEMA_PATH) -> Any:
    import jsonschema

    schema = json.loads(schema_path.read_text())
    return jsonschema.Draft202012Validator(schema)


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def check_schema(data: Any, source: str, schema_path: Path = SCHEMA_PATH, schema: dict[str, Any] | None = None) -> None:
    """Raise RecipeError naming ``source`` and the first offending field (the deepest, most specific one)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema) if schema is not None else _validator(schema_path)
    errors = list(validator.iter_errors(data))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise RecipeError(f"{source}: {_field(best.absolute_path)}: {best.message}")


def validate_recipe_data(data: Any, source: str) -> None:
    """The schema, then the cross-field rules a schema cannot say: kinds, their settings, the graph."""
    from npuflow.graph import GraphError, bind_inputs, topological
    from npuflow.kinds import registry

    check_schema(data, source)
    if data["default_profile"] not in data["profiles"]:
        raise RecipeError(
            f"{source}: default_profile: {data['default_profile']!r} is not one of the profiles "
            f"{sorted(data['profiles'])}"
        )
    from npuflow.toolkits import registry as toolkits

    tk = toolkits().get(data["toolkit"]["name"])
    if tk is not None and data["toolkit"]["ref"] not in tk.refs:
        raise RecipeError(f"{source}: toolkit.ref: {tk.name} is modelled at {sorted(tk.refs)} "
                          f"(npuflow/toolkits/), not at {data['toolkit']['ref']!r}")
    kinds = registry()
    for name, stage in data["stages"].items():
        where = f"{source}: stages.{name}"
        kind = kinds.get(stage["kind"])
        if kind is None:
            raise RecipeError(f"{where}.kind: {stage['kind']!r} is not a stage kind; kinds are {sorted(kinds)}")
        if kind.toolkit:
            missing = [f for f in ("argv", "cwd") if f not in stage]
            if missing:
                raise RecipeError(f"{where}: a {kind.name} stage runs the toolkit's own command: {missing} required")
        else:
            extra = [f for f in ("argv", "cwd", "outputs", "resume", "metrics_file") if f in stage]
            if extra:
                raise RecipeError(f"{where}: a {kind.name} stage builds its command in code; {extra} are not "
                                  f"allowed (its values go in settings)")
        if not kind.holds_cards and any(f in stage for f in ("resume", "free_disk", "expect_line")):
            raise RecipeError(f"{where}: resume, free_disk and expect_line are for stages that hold cards")
        check_schema(stage.get("settings", {}), f"{where}.settings", schema=kind.settings_schema)
    try:
        topological(data["stages"], source)
        bind_inputs(data["stages"], source)
    except GraphError as exc:
        raise RecipeError(str(exc)) from None
    for metric, pub in data["published"].items():
        _check_measured(data, pub["measured_as"], f"{source}: published.{metric}.measured_as")
    gates = data.get("gates", {})
    for name, gate in gates.items():
        for field in ("measured_as", "minus"):
            if field in gate:
                _check_measured(data, gate[field], f"{source}: gates.{name}.{field}")
        for bound in ("at_least", "at_most"):
            _check_published_bound(data, gate.get(bound), f"{source}: gates.{name}.{bound}")
    for profile_name, profile in data["profiles"].items():
        for name, bound in (profile.get("gates") or {}).items():
            if name not in gates:
                raise RecipeError(f"{source}: profiles.{profile_name}.gates.{name}: no gate {name!r}; gates are "
                                  f"{sorted(gates)}")
            for key, value in bound.items():
                _check_published_bound(data, value, f"{source}: profiles.{profile_name}.gates.{name}.{key}")
    for name, stage in data["stages"].items():
        for gate in stage.get("settings", {}).get("gates", []) if stage["kind"] == "gate" else []:
            if gate not in gates:
                raise RecipeError(f"{source}: stages.{name}.settings.gates: no gate {gate!r}; gates are "
                                  f"{sorted(gates)}")


def _check_measured(data: dict[str, Any], measured_as: str, where: str) -> None:
    """``<stage>.<metric>`` must name a stage whose kind measures that metric."""
    from npuflow.kinds import registry

    stage_name, _, measured = measured_as.partition(".")
    stage = data["stages"].get(stage_name)
    if stage is None:
        raise RecipeError(f"{where}: {stage_name!r} names no stage")
    metrics = registry()[stage["kind"]].metrics
    if measured not in metrics:
        raise RecipeError(f"{where}: a {stage['kind']} stage measures {list(metrics)}, not {measured!r}")


def _check_published_bound(data: dict[str, Any], bound: Any, where: str) -> None:
    if isinstance(bound, dict) and bound["published"] not in data["published"]:
        raise RecipeError(f"{where}.published: {bound['published']!r} is not a published metric; they are "
                          f"{sorted(data['published'])}")


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc


def load_recipe_file(path: Path) -> Recipe:
    data = read_yaml(path)
    validate_recipe_data(data, str(path))
    load_dataset_spec(data["dataset"]["spec"])  # a recipe naming a missing or broken spec is a broken recipe
    if data["dag_id"] != path.stem:
        raise RecipeError(f"{path}: dag_id: {data['dag_id']!r} must equal the file name {path.stem!r}")
    return Recipe(path=path, data=data)


def load_recipe(dag_id: str) -> Recipe:
    path = recipes_dir() / f"{dag_id}.yaml"
    if not path.is_file():
        raise RecipeError(f"no recipe {dag_id!r}: {path} does not exist; known: {list_recipes()}")
    return load_recipe_file(path)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


DATASET_SCHEMA_PATH = Path(__file__).with_name("dataset.schema.json")


@cache
def _dataset_spec(path: Path, mtime_ns: int) -> dict[str, Any]:
    data = read_yaml(path)
    check_schema(data, str(path), DATASET_SCHEMA_PATH)
    if data["name"] != path.stem:
        raise RecipeError(f"{path}: name: {data['name']!r} must equal the file name {path.stem!r}")
    if data.get("base"):
        base = load_dataset_spec(data["base"])
        if base.get("base"):
            raise RecipeError(f"{path}: base: {data['base']!r} has a base of its own; one level only")
    return data


def load_dataset_spec(name: str) -> dict[str, Any]:
    """A dataset spec (``recipes/datasets/<name>.yaml``): archives, layout, expected counts, derivations."""
    path = recipes_dir() / "datasets" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (recipes_dir() / "datasets").glob("*.yaml"))
        raise RecipeError(f"no dataset spec {name!r}: {path} does not exist; known: {known}")
    return _dataset_spec(path, path.stat().st_mtime_ns)
