"""Per-run copies of PaddleSlim ACT configs: point ``Global.model_dir`` at this run's model and the ppdet reader
config at this run's dataset, then apply the recipe's overrides.

The tutorials say to edit ``model_dir`` and ``dataset_dir`` in the shipped configs by hand; a pipeline writes
a copy into the stage's directory instead, so the checkout stays untouched and two runs never share a file.
ppdet reader configs carry YAML tags (``!COCODataSet``), which :class:`_TaggedLoader` keeps as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from npuflow.errors import StageRefused


@dataclass
class Tagged:
    """A YAML node under an application tag (``!COCODataSet``), kept for writing back."""

    tag: str
    value: Any


class _TaggedLoader(yaml.SafeLoader):
    pass


class _TaggedDumper(yaml.SafeDumper):
    pass


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged("!" + suffix, value)


def _represent(dumper: yaml.SafeDumper, data: Tagged) -> yaml.Node:
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    return dumper.represent_scalar(data.tag, str(data.value))


_TaggedLoader.add_multi_constructor("!", _construct)
_TaggedDumper.add_representer(Tagged, _represent)


def load_tagged(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_TaggedLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise StageRefused(f"cannot read the config {path}: {exc}") from None


def dump_tagged(data: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_TaggedDumper, sort_keys=False))
    return path


def _child(node: Any, part: str) -> Any:
    """``node[part]`` of a mapping, or item ``int(part)`` of a list (``EvalReader.sample_transforms.1``)."""
    node = node.value if isinstance(node, Tagged) else node
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def _mapping(node: Any) -> dict[str, Any] | None:
    node = node.value if isinstance(node, Tagged) else node
    return node if isinstance(node, dict) else None


def set_dotted(config: dict[str, Any], key: str, value: Any, source: str, *, if_present: bool = False,
               create: bool = False) -> None:
    """``TrainConfig.train_iter`` = value; every part but the last must already be a mapping or a list item
    (a number). With ``if_present`` a missing section is skipped instead (a reader config may have no
    TestDataset). With ``create`` missing mappings are made (a config that inherits a base merges them into it)."""
    *parents, last = key.split(".")
    node: Any = config
    for part in parents:
        if create and isinstance(node, dict) and part not in node:
            node[part] = {}
        node = _child(node, part) if node is not None else None
    node = _mapping(node)
    if node is None:
        if if_present:
            return
        raise StageRefused(f"{source}: cannot set {key}: {'.'.join(parents)!r} is not a section of the config")
    node[last] = value


#: Where the dataset folder goes in a ppdet reader config; a PaddleSeg dataset config says
#: ``train_dataset.dataset_root`` / ``val_dataset.dataset_root`` (a recipe's ``settings.dataset_fields``).
PPDET_DATASET_FIELDS = ("TrainDataset.dataset_dir", "EvalDataset.dataset_dir", "TestDataset.dataset_dir")


#: The keys by which ppdet (``_BASE_``) and PaddleSeg (``_base_``) configs inherit other files.
BASE_KEYS = ("_BASE_", "_base_")


def _absolute_bases(config: Any, source: Path) -> None:
    """A copy written elsewhere keeps inheriting the same files: relative bases become absolute paths."""
    if not isinstance(config, dict):
        return
    for key in BASE_KEYS:
        if key in config:
            bases = config[key]
            absolute = [os.path.normpath(source.parent / b) for b in ([bases] if isinstance(bases, str) else bases)]
            config[key] = absolute[0] if isinstance(bases, str) else absolute


def _override_value(value: Any) -> Any:
    """A ``set``/``reader_set`` value: rendered templates arrive as text, so "8" is the number 8 and "[160, 160]"
    a list."""
    return yaml.safe_load(value) if isinstance(value, str) else value


def reader_copy(act_config: Path) -> Path:
    """Where the per-run copy of the reader config an ACT config names is written (beside the ACT copy)."""
    return act_config.with_name(f"{act_config.stem}.reader.yml")


def write_act_config(template: Path, out: Path, *, cwd: Path, model_dir: str, model_file: str, params_file: str,
                     reader_config: str | None, dataset_root: str | None, overrides: dict[str, Any],
                     dataset_fields: tuple[str, ...] | list[str] = PPDET_DATASET_FIELDS,
                     reader_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out`` from ``template`` for this run; returns the written config. Relative paths inside it are
    relative to ``cwd``, the folder the toolkit's scripts run from (deploy/auto_compression)."""
    config = load_tagged(template)
    if not isinstance(config, dict) or not isinstance(config.get("Global"), dict):
        raise StageRefused(f"{template}: not an ACT config (no Global section)")
    glob = config["Global"]
    glob.update(model_dir=model_dir, model_filename=model_file, params_filename=params_file)
    if reader_config:
        glob["reader_config"] = reader_config
    if glob.get("reader_config"):
        source = cwd / glob["reader_config"]
        reader = load_tagged(source)
        _absolute_bases(reader, source)
        inherits = isinstance(reader, dict) and any(key in reader for key in BASE_KEYS)
        if dataset_root is not None:
            for field in dataset_fields:
                set_dotted(reader, field, dataset_root, glob["reader_config"], if_present=not inherits,
                           create=inherits)
        for key, value in (reader_overrides or {}).items():
            set_dotted(reader, key, _override_value(value), glob["reader_config"])
        glob["reader_config"] = str(dump_tagged(reader, reader_copy(out)))
    for key, value in overrides.items():
        set_dotted(config, key, _override_value(value), str(template))
    dump_tagged(config, out)
    return config
