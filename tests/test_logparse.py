"""Log parsers on real lines of each toolkit's training output."""

from __future__ import annotations

import json
import math

import pytest

from npuflow.logparse import (
    MetricsSummary,
    calc_fps,
    mean_step_time,
    parse_eta,
    parse_paddleseg_line,
    parse_ppdet_line,
    parser_for,
)
from npuflow.recipe import PROJECT_ROOT

# Printed by ppdet 2.6.0 (rank 0) in this project's smoke run.
PPDET_TRAIN = ("[11/23 20:25:26] ppdet.engine INFO: Epoch: [1] [2/3] learning_rate: 0.001223 loss: 3.545623 "
               "loss_cls: 0.535375 loss_iou: 0.723703 loss_dfl: 2.401980 loss_l1: 4.808639 eta: 0:00:01 "
               "batch_cost: 0.4101 data_cost: 0.0002 ips: 9.7535 images/s")
PPDET_AP = " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.412"
PPDET_AP_SMALL = " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = 0.201"
PPDET_BEST = "[11/23 20:25:28] ppdet.engine INFO: Best test bbox ap is 0.413."
# The formats FACTS.md quotes for PaddleSeg.
SEG_TRAIN = ("2026-11-23 20:00:00 [INFO]\t[TRAIN] epoch: 1, iter: 10/80000, loss: 2.0412, lr: 0.009999, "
             "batch_cost: 0.5123, reader_cost: 0.01234, ips: 3.9040 samples/sec | ETA 11:22:33")
SEG_EVAL = "2026-11-23 20:10:00 [INFO]\t[EVAL] #Images: 500 mIoU: 0.7931 Acc: 0.9612 Kappa: 0.9487 Dice: 0.8745"


def test_ppdet_train_line() -> None:
    rec = parse_ppdet_line(PPDET_TRAIN)
    assert rec == {
        "type": "train", "epoch": 1, "iter": 2, "iters_per_epoch": 3, "lr": 0.001223,
        "losses": {"loss": 3.545623, "loss_cls": 0.535375, "loss_iou": 0.723703, "loss_dfl": 2.40198,
                   "loss_l1": 4.808639},
        "eta_s": 1, "batch_cost": 0.4101, "data_cost": 0.0002, "ips_per_card": 9.7535,
    }


def test_ppdet_eval_lines() -> None:
    assert parse_ppdet_line(PPDET_AP) == {"type": "eval", "bbox_map": 0.412}
    assert parse_ppdet_line(PPDET_AP_SMALL) is None  # only the all-area summary counts
    assert parse_ppdet_line(PPDET_BEST) == {"type": "eval", "best_bbox_ap": 0.413}


def test_ppdet_nan_loss_is_parsed_not_dropped() -> None:
    rec = parse_ppdet_line(PPDET_TRAIN.replace("loss: 3.545623", "loss: nan"))
    assert rec is not None and math.isnan(rec["losses"]["loss"])


def test_paddleseg_lines() -> None:
    rec = parse_paddleseg_line(SEG_TRAIN)
    assert rec is not None
    assert (rec["epoch"], rec["iter"], rec["iters_total"]) == (1, 10, 80000)
    assert rec["losses"] == {"loss": 2.0412}
    assert rec["eta_s"] == 11 * 3600 + 22 * 60 + 33
    assert rec["ips_per_card"] == 3.904
    assert parse_paddleseg_line(SEG_EVAL) == {"type": "eval", "images": 500, "miou": 0.7931, "acc": 0.9612,
                                              "kappa": 0.9487, "dice": 0.8745}
    best = "2026-11-23 20:10:01 [INFO]\t[EVAL] The model with the best validation mIoU (0.7931) was saved at iter 64000."
    assert parse_paddleseg_line(best) == {"type": "eval", "best_miou": 0.7931, "best_iter": 64000}


@pytest.mark.parametrize(("text", "seconds"), [("0:00:05", 5), ("12:34:56", 45296), ("2 days, 1:00:00", 176400)])
def test_eta(text: str, seconds: int) -> None:
    assert parse_eta(text) == seconds


def test_unrelated_lines_are_ignored() -> None:
    for line in ["LAUNCH INFO 2026-11-23 ips: None", "loading annotations into memory...", ""]:
        assert parse_ppdet_line(line) is None
        assert parse_paddleseg_line(line) is None


def test_summary_scales_throughput_and_flags_non_finite_losses() -> None:
    summary = MetricsSummary(world_size=8)
    summary.add(parse_ppdet_line(PPDET_TRAIN))
    summary.add(parse_ppdet_line(PPDET_TRAIN.replace("loss: 3.545623", "loss: inf")))
    summary.add(parse_ppdet_line(PPDET_AP))
    out = summary.to_dict()
    assert out["ips_global_median"] == pytest.approx(9.7535 * 8)
    assert out["non_finite_losses"] == 1 and out["losses_finite"] is False
    assert out["eval"]["bbox_map"] == 0.412 and out["evaluations"] == 1


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="no parser"):
        parser_for("caffe")


# The ModelZoo YOLOR port's per-step line, printed by its train.py with this format (ModelZoo-PyTorch 6a2804a):
YOLOR_FORMAT = ("Epoch:[%2g][%4g/%4g][%s][FPS:%3.1f][mTime:%3.3f][pTime:%3.3f][dTime:%3.3f] GIoU:%.3f objectness:%.3f "
                "classfication:%.3f totalLoss:%.3f")
YOLOR_TRAIN = YOLOR_FORMAT % (3, 120, 1848, "npu:0", 143.3, 0.447, 0.450, 0.002, 0.062, 0.371, 0.002, 0.435)
# MMDetection 2.x <timestamp>.log.json lines (the SSD port): first the env line, then train and val records.
MMDET_ENV = '{"env_info": "sys.platform: linux", "config": "model = dict(type=\'SingleStageDetector\')", "seed": 0}'
MMDET_TRAIN = ('{"mode": "train", "epoch": 1, "iter": 50, "lr": 0.0015, "memory": 10253, "data_time": 0.0612, '
               '"loss_cls": 14.2551, "loss_bbox": 3.4021, "loss": 17.6572, "time": 0.6021}')
MMDET_VAL = ('{"mode": "val", "epoch": 1, "iter": 625, "lr": 0.0015, "bbox_mAP": 0.085, "bbox_mAP_50": 0.181, '
             '"bbox_mAP_75": 0.07, "bbox_mAP_s": 0.011, "bbox_mAP_m": 0.079, "bbox_mAP_l": 0.142, '
             '"bbox_mAP_copypaste": "0.085 0.181 0.070 0.011 0.079 0.142"}')


def test_yolor_train_line_is_the_ports_format_and_its_fps_is_over_all_cards() -> None:
    format_in_port = (PROJECT_ROOT.parent / "shared/upstream/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/YOLOR/train.py")
    assert f"'{YOLOR_FORMAT}'" in format_in_port.read_text()  # the line is the checkout's, not our guess
    rec = parser_for("yolor")(YOLOR_TRAIN)
    assert YOLOR_TRAIN.startswith("Epoch:[ 3][ 120/1848][npu:0]")
    assert rec == {"type": "train", "epoch": 3, "iter": 121, "iters_per_epoch": 1848, "device": "npu:0",
                   "ips_global": 143.3, "batch_cost": 0.447, "data_cost": 0.002,
                   "losses": {"GIoU": 0.062, "objectness": 0.371, "classfication": 0.002, "totalLoss": 0.435,
                              "loss": 0.435}}
    summary = MetricsSummary(world_size=8)
    summary.add(rec)
    assert summary.to_dict()["ips_global_median"] == 143.3  # not multiplied by the cards again
    nan = parser_for("yolor")(YOLOR_FORMAT % (0, 5, 8, "cpu", 3.3, 0.6, 0.5, 0.0, math.nan, 0.3, 0.0, math.nan))
    assert math.isnan(nan["losses"]["loss"])


def test_yolor_non_finite_warning_and_test_py_summary_line() -> None:
    parse = parser_for("yolor")
    # train.py returns on a non-finite loss and exits 0: the warning is the only sign
    assert math.isnan(parse("WARNING: non-finite loss, ending training  tensor([nan, 0., 0., nan])")["losses"]["loss"])
    # test.py's '%20s' + '%12.3g' * 6 line: all, images, targets, P, R, mAP@.5, mAP@.5:.95
    line = ("%20s" + "%12.3g" * 6) % ("all", 5000, 36335, 0.554, 0.706, 0.686, 0.514)
    assert parse(line) == {"type": "eval", "bbox_map": 0.514, "bbox_ap50": 0.686}
    assert parse(("%20s" + "%12.3g" * 6) % ("person", 5000, 10777, 0.6, 0.7, 0.8, 0.5)) is None


def test_mmdet_json_lines() -> None:
    parse = parser_for("mmdet_json")
    assert parse(MMDET_ENV) is None
    train = parse(MMDET_TRAIN)
    assert train == {"type": "train", "epoch": 1, "iter": 50, "lr": 0.0015, "batch_cost": 0.6021, "data_cost": 0.0612,
                     "losses": {"loss_cls": 14.2551, "loss_bbox": 3.4021, "loss": 17.6572}}
    val = parse(MMDET_VAL)
    assert val["type"] == "eval" and val["bbox_map"] == 0.085 and val["bbox_ap50"] == 0.181
    assert "bbox_mAP_copypaste" not in val
    summary = MetricsSummary(world_size=8)
    summary.add(train)
    summary.add(val)
    assert summary.to_dict()["evaluations"] == 1 and summary.to_dict()["losses_finite"] is True


def test_new_formats_ignore_other_lines() -> None:
    for line in ["loading annotations into memory...", "Epoch [1][50/625] lr: 1.5e-03", "{not json", "[1, 2]"]:
        assert parser_for("yolor")(line) is None
        assert parser_for("mmdet_json")(line) is None


def test_yolor_test_py_coco_table_is_its_evaluation() -> None:
    parse = parser_for("yolor")
    assert parse(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.431") == \
        {"type": "eval", "bbox_map": 0.431}
    assert parse(" Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.606") == \
        {"type": "eval", "bbox_ap50": 0.606}
    assert parse(" Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = 0.2") is None


def test_calc_fps_is_cards_times_batch_over_the_mean_step_time_without_the_first() -> None:
    summary = MetricsSummary(world_size=8)
    for time_s in (5.0, 0.5, 0.5, 0.75):  # the first step pays for start-up
        summary.add(parser_for("mmdet_json")(json.dumps({"mode": "train", "epoch": 1, "iter": 1, "loss": 1.0,
                                                         "time": time_s})))
    step = summary.to_dict()["step_time_mean_s"]
    assert step == pytest.approx(0.5833333)
    assert calc_fps(step, 8, 8) == pytest.approx(64 / 0.5833333)
    assert mean_step_time([2.0]) == 2.0 and mean_step_time([]) is None
