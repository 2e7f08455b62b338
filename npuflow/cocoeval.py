"""COCO box metrics for the project's own programs (benchmarks, the PyTorch stand-ins' evaluation).

faster-coco-eval computes the same 12 stats as pycocotools (equal to 1e-16, FACTS) about 10x faster on a
val2017-sized case (``bench/coco_eval.py``); toolkits that print their own table keep pycocotools. Imported
lazily by programs under the toolkit's interpreter, never inside Airflow; Python 3.9 compatible (the Paddle
benchmark imports it under the tutorials' image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The 12 stats in COCOeval's order, under MMDetection's log.json names (bbox_mAP, bbox_mAP_50, ...).
STAT_NAMES = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
              "bbox_AR_1", "bbox_AR_10", "bbox_AR_100", "bbox_AR_s", "bbox_AR_m", "bbox_AR_l")


def coco_stats(ann_file: Path | str, detections: list[dict[str, Any]], printer: Any = print) -> dict[str, float]:
    """The 12 COCO bbox stats of ``detections`` (COCO result dicts, ``bbox`` as x, y, w, h) against the
    instances file; ``printer`` receives COCOeval's summary table (pass None to keep it quiet)."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not detections:
        return dict.fromkeys(STAT_NAMES, 0.0)
    gt = COCO(str(ann_file))
    ev = COCOeval_faster(gt, gt.loadRes(detections), "bbox", print_function=printer or (lambda *_: None))
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {name: float(ev.stats[i]) for i, name in enumerate(STAT_NAMES)}
