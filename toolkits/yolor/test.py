"""Stand-in for YOLOR's ``test.py``: COCO mAP of a checkpoint through the val instances JSON.

    python test.py --data <root>/data.yaml --weights runs/train/exp/weights/last.pt --img 128 --save-json

As YOLOR's test.py with ``--save-json`` (what train.py runs after the last epoch), the detections are written as
COCO results (``<weights stem>_predictions.json``) and scored against ``annotations/instances_<val>.json`` beside
the data, printing COCOeval's table. The score is computed with faster-coco-eval (the same 12 stats as
pycocotools, FACTS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.tiny import TinyYolo, load_checkpoint

from npuflow.cocoeval import coco_stats
from npuflow.torchdet.data import CocoBoxes, evaluate


def val_annotations(data_yaml: Path) -> Path:
    meta = json.loads(data_yaml.read_text())  # derive writes JSON, which is YAML
    split = Path(meta["val"]).stem  # val2017.txt -> val2017
    ann = data_yaml.parent / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise SystemExit(f"error: {ann} not found: COCO mAP needs the val instances JSON beside the YOLO labels")
    return ann


def val_categories(data_yaml: Path) -> list[int]:
    """The COCO category id of each class index (YOLOR's coco80_to_coco91_class, read from the JSON)."""
    return sorted(c["id"] for c in json.loads(val_annotations(data_yaml).read_text())["categories"])


def test(model: TinyYolo, data_yaml: Path, size: tuple[int, int], save_json: Path | None = None) -> dict[str, float]:
    ann = val_annotations(data_yaml)
    val = CocoBoxes(ann, ann.parent.parent / ann.stem.removeprefix("instances_"), size)
    detections = evaluate(model, val)
    if save_json is not None:
        save_json.write_text(json.dumps(detections))
    print(f"Evaluating pycocotools-style mAP of {len(detections)} detections on {len(val)} images ({ann.name})",
          flush=True)
    return coco_stats(ann, detections)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--img", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--save-json", action="store_true")
    opt = p.parse_args()
    model, _ = load_checkpoint(str(opt.weights))
    out = opt.weights.with_name(f"{opt.weights.stem}_predictions.json") if opt.save_json else None
    stats = test(model, opt.data, (opt.img, opt.img), out)
    print(json.dumps({"bbox_mAP": stats["bbox_mAP"], "bbox_mAP_50": stats["bbox_mAP_50"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
