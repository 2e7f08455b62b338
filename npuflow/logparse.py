"""Turn a toolkit's training log lines into metric records (plain dicts, one per line that carries numbers).

The recipe names the format (``log_format``); the train stage feeds every line of the launcher's output
through :func:`parser_for` and appends the records to ``metrics.jsonl``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"

# PaddleDetection: "Epoch: [1] [2/3] learning_rate: 0.001223 loss: 3.54 loss_cls: 0.53 ... eta: 0:00:01
#                   batch_cost: 0.4101 data_cost: 0.0002 ips: 9.7535 images/s"  (ips is per card)
_PPDET_TRAIN = re.compile(r"Epoch: \[(?P<epoch>\d+)\] \[\s*(?P<iter>\d+)/(?P<iters>\d+)\](?P<rest>.*)")
_KV = re.compile(rf"(?P<key>[A-Za-z_][A-Za-z0-9_]*): (?P<value>\d+ days?, \d+:\d\d:\d\d|\d+:\d\d:\d\d|{_NUM})")
_COCO_AP = re.compile(
    rf"Average Precision\s+\(AP\) @\[ IoU=(?P<iou>0\.50:0\.95|0\.50|0\.75)\s+\| area=\s*all \| maxDets=100 \] = (?P<v>{_NUM})")
_PPDET_BEST = re.compile(rf"Best test (?P<key>\w+) (?P<func>\w+) is (?P<v>{_NUM})\.")


def parse_eta(text: str) -> float:
    """'1 day, 2:03:04' or '0:00:05' -> seconds."""
    days = 0
    if "day" in text:
        head, text = text.split(",", 1)
        days = int(head.split()[0])
    h, m, s = (int(x) for x in text.strip().split(":"))
    return days * 86400 + h * 3600 + m * 60 + s


def _coco_summary_line(line: str) -> Record | None:
    """A line of COCOeval's table (pycocotools and faster-coco-eval print the same): AP, AP50, AP75."""
    m = _COCO_AP.search(line)
    if m:
        key = {"0.50:0.95": "bbox_map", "0.50": "bbox_ap50", "0.75": "bbox_ap75"}[m["iou"]]
        return {"type": "eval", key: float(m["v"])}
    return None


def parse_ppdet_line(line: str) -> Record | None:
    m = _PPDET_TRAIN.search(line)
    if m:
        rec: Record = {"type": "train", "epoch": int(m["epoch"]), "iter": int(m["iter"]),
                       "iters_per_epoch": int(m["iters"]), "losses": {}}
        for kv in _KV.finditer(m["rest"]):
            key, value = kv["key"], kv["value"]
            if key == "eta":
                rec["eta_s"] = parse_eta(value)
            elif key == "learning_rate":
                rec["lr"] = float(value)
            elif key.startswith("loss"):
                rec["losses"][key] = float(value)
            elif key == "ips":
                rec["ips_per_card"] = float(value)
            elif key in ("batch_cost", "data_cost"):
                rec[key] = float(value)
        return rec
    rec = _coco_summary_line(line)
    if rec:
        return rec
    m = _PPDET_BEST.search(line)
    if m:
        return {"type": "eval", f"best_{m['key']}_{m['func']}": float(m["v"])}
    return None


# PaddleSeg: "[TRAIN] epoch: 1, iter: 10/80000, loss: 2.1, lr: 0.009, batch_cost: 0.5, reader_cost: 0.01,
#            ips: 4.0 samples/sec | ETA 11:06:40"  and  "[EVAL] #Images: 500 mIoU: 0.7 Acc: 0.9 Kappa: 0.8 Dice: 0.8"
_SEG_TRAIN = re.compile(r"\[TRAIN\] epoch: (?P<epoch>\d+), iter: (?P<iter>\d+)/(?P<iters>\d+), (?P<rest>.*)")
_SEG_KV = re.compile(rf"(?P<key>[A-Za-z_]+): (?P<value>{_NUM})")
_SEG_ETA = re.compile(r"ETA (?P<eta>(?:\d+ days?, )?\d+:\d\d:\d\d)")
_SEG_EVAL = re.compile(rf"\[EVAL\] #Images: (?P<images>\d+) mIoU: (?P<miou>{_NUM}) Acc: (?P<acc>{_NUM}) "
                       rf"Kappa: (?P<kappa>{_NUM})(?: Dice: (?P<dice>{_NUM}))?")
# "[EVAL] The model with the best validation mIoU (0.7012) was saved at iter 64000."
_SEG_BEST = re.compile(rf"\[EVAL\] The model with the best validation mIoU \((?P<miou>{_NUM})\) was saved at iter "
                       rf"(?P<iter>\d+)")


def parse_paddleseg_line(line: str) -> Record | None:
    m = _SEG_TRAIN.search(line)
    if m:
        rec: Record = {"type": "train", "epoch": int(m["epoch"]), "iter": int(m["iter"]),
                       "iters_total": int(m["iters"]), "losses": {}}
        for kv in _SEG_KV.finditer(m["rest"]):
            key, value = kv["key"], float(kv["value"])
            if key == "loss":
                rec["losses"]["loss"] = value
            elif key == "lr":
                rec["lr"] = value
            elif key == "ips":
                rec["ips_per_card"] = value
            elif key in ("batch_cost", "reader_cost"):
                rec[key] = value
        eta = _SEG_ETA.search(m["rest"])
        if eta:
            rec["eta_s"] = parse_eta(eta["eta"])
        return rec
    m = _SEG_EVAL.search(line)
    if m:
        rec = {"type": "eval", "images": int(m["images"]), "miou": float(m["miou"]), "acc": float(m["acc"]),
               "kappa": float(m["kappa"])}
        if m["dice"] is not None:
            rec["dice"] = float(m["dice"])
        return rec
    m = _SEG_BEST.search(line)
    if m:  # what best_model/ holds
        return {"type": "eval", "best_miou": float(m["miou"]), "best_iter": int(m["iter"])}
    return None


# The ModelZoo YOLOR port (train.py, rank 0 only): "Epoch:[ 0][   3/   8][npu:0][FPS:143.3][mTime:0.447]
# [pTime:0.450][dTime:0.002] GIoU:0.062 objectness:0.371 classfication:0.002 totalLoss:0.435". The iteration is
# 0-based; FPS is --batch-size (the total over all cards) over mTime, the mean step time since step 10.
_YOLOR_TRAIN = re.compile(r"Epoch:\[\s*(?P<epoch>\d+)\]\[\s*(?P<iter>\d+)/\s*(?P<iters>\d+)\]\[(?P<device>[^\]]*)\]"
                          r"(?P<rest>.*)")
_YOLOR_BRACKET = re.compile(rf"\[(?P<key>[A-Za-z]+):(?P<value>{_NUM})\]")
_YOLOR_LOSS = re.compile(rf"(?P<key>[A-Za-z]+):(?P<value>{_NUM})(?=\s|$)")
# test.py's own summary: "%20s%12.3g x 6" of ('all', images, targets, P, R, mAP@.5, mAP@.5:.95).
_YOLOR_ALL = re.compile(rf"^\s*all\s+(?:{_NUM})\s+(?:{_NUM})\s+(?:{_NUM})\s+(?:{_NUM})\s+(?P<ap50>{_NUM})\s+(?P<ap>{_NUM})\s*$")
_YOLOR_NON_FINITE = "WARNING: non-finite loss, ending training"


def parse_yolor_line(line: str) -> Record | None:
    m = _YOLOR_TRAIN.search(line)
    if not m:
        if _YOLOR_NON_FINITE in line:  # the port returns from train() and exits 0: only this line tells
            return {"type": "train", "epoch": None, "iter": None, "losses": {"loss": math.nan}}
        found = _YOLOR_ALL.match(line)
        if found:  # pycocotools' table, when test.py prints it, comes after and overrides these
            return {"type": "eval", "bbox_map": float(found["ap"]), "bbox_ap50": float(found["ap50"])}
        return _coco_summary_line(line)  # test.py --save-json
    rest = m["rest"]
    values = {kv["key"]: float(kv["value"]) for kv in _YOLOR_BRACKET.finditer(rest)}
    losses = {kv["key"]: float(kv["value"]) for kv in _YOLOR_LOSS.finditer(rest.rsplit("]", 1)[-1])}
    if "totalLoss" in losses:
        losses["loss"] = losses["totalLoss"]
    rec: Record = {"type": "train", "epoch": int(m["epoch"]), "iter": int(m["iter"]) + 1,
                   "iters_per_epoch": int(m["iters"]), "device": m["device"], "losses": losses}
    if "FPS" in values:
        rec["ips_global"] = values["FPS"]
    if "mTime" in values:
        rec["batch_cost"] = values["mTime"]
    if "dTime" in values:
        rec["data_cost"] = values["dTime"]
    return rec


def parse_mmdet_json_line(line: str) -> Record | None:
    """MMDetection's ``<timestamp>.log.json``: one JSON object per line, ``mode`` train or val."""
    import json

    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("mode") not in ("train", "val"):
        return None  # the first line holds env_info/config/seed
    if obj["mode"] == "val":
        rec: Record = {"type": "eval", "epoch": obj.get("epoch")}
        for key, value in obj.items():
            if key.startswith("bbox_mAP") and isinstance(value, (int, float)):
                rec[{"bbox_mAP": "bbox_map", "bbox_mAP_50": "bbox_ap50", "bbox_mAP_75": "bbox_ap75"}.get(key, key)] = \
                    float(value)
        return rec
    rec = {"type": "train", "epoch": obj.get("epoch"), "iter": obj.get("iter"),
           "losses": {k: float(v) for k, v in obj.items() if k.startswith("loss") and isinstance(v, (int, float))}}
    if "lr" in obj:
        rec["lr"] = float(obj["lr"])
    if "time" in obj:
        rec["batch_cost"] = float(obj["time"])
    if "data_time" in obj:
        rec["data_cost"] = float(obj["data_time"])
    return rec


PARSERS: dict[str, Callable[[str], Record | None]] = {
    "ppdet": parse_ppdet_line,
    "paddleseg": parse_paddleseg_line,
    "yolor": parse_yolor_line,
    "mmdet_json": parse_mmdet_json_line,
}


def parser_for(log_format: str) -> Callable[[str], Record | None]:
    try:
        return PARSERS[log_format]
    except KeyError:
        raise ValueError(f"no parser for log format {log_format!r} yet; have {sorted(PARSERS)}") from None


def mean_step_time(step_times: list[float]) -> float | None:
    """Mean seconds per logged step, the first (start-up: graph build, first batch) left out when there are more."""
    kept = step_times[1:] if len(step_times) > 1 else step_times
    return sum(kept) / len(kept) if kept else None


def calc_fps(step_time_s: float, world_size: int, batch_per_card: int) -> float:
    """Training images/s as the SSD port's ``calc_fps.py <log.json> <world_size> <batch_per_card>`` reports it:
    every card takes ``batch_per_card`` images per step, so world_size x batch_per_card over the mean step
    ``time`` of the log.json's train lines."""
    return world_size * batch_per_card / step_time_s


class MetricsSummary:
    """Folds records into what the report and XCom need: last/min loss, throughput, eval metrics."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.train_steps = 0
        self.non_finite_losses = 0
        self.first_loss: float | None = None
        self.last: Record | None = None
        self.ips: list[float] = []
        self.eval: dict[str, float] = {}
        self.evals = 0
        self.step_times: list[float] = []

    def add(self, rec: Record) -> Record:
        """Record ``rec`` and return it enriched with global throughput."""
        if rec["type"] == "train":
            self.train_steps += 1
            loss = rec["losses"].get("loss")
            if loss is not None:
                if not math.isfinite(loss):
                    self.non_finite_losses += 1
                elif self.first_loss is None:
                    self.first_loss = loss
            if "ips_per_card" in rec:
                rec["ips_global"] = rec["ips_per_card"] * self.world_size
            if "ips_global" in rec:  # per card (ppdet's ips) or already over all cards (the YOLOR port's FPS)
                self.ips.append(rec["ips_global"])
            if "batch_cost" in rec:
                self.step_times.append(rec["batch_cost"])
            self.last = rec
        else:
            if "bbox_map" in rec or "miou" in rec:
                self.evals += 1
            self.eval.update({k: v for k, v in rec.items() if k != "type"})
        return rec

    def to_dict(self) -> dict[str, Any]:
        last = self.last or {}
        # The first few steps include start-up; the median of the rest is the steady throughput.
        steady = sorted(self.ips[len(self.ips) // 4:]) if self.ips else []
        return {
            "train_steps": self.train_steps,
            "evaluations": self.evals,
            "first_loss": self.first_loss,
            "last_losses": last.get("losses", {}),
            "last_epoch": last.get("epoch"),
            "non_finite_losses": self.non_finite_losses,
            "losses_finite": self.train_steps > 0 and self.non_finite_losses == 0,
            "ips_global_median": steady[len(steady) // 2] if steady else None,
            "step_time_mean_s": mean_step_time(self.step_times),
            "world_size": self.world_size,
            "eval": dict(self.eval),
        }
