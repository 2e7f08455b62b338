"""Stand-in for PaddleSeg's deploy/python/infer.py (same flags): Paddle Inference on the exported model for one
image or a folder, writing each prediction as a pseudo-colour PNG of the same name under --save_dir."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2  # before paddle: paddle 2.6 bundles its own zlib (FACTS)
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the project, for npuflow.programs

from npuflow.programs.paddle_inference import make_predictor
from npuflow.programs.paddle_segmentation_bench import class_map, preprocess


def palette(classes: int = 256) -> np.ndarray:
    """PaddleSeg's visualisation colour map: the bits of each class id spread over R, G and B."""
    colours = np.zeros((classes, 3), np.uint8)
    for cls in range(classes):
        value, shift = cls, 7
        while value:
            for channel in range(3):
                colours[cls, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the exported model's deploy.yaml")
    p.add_argument("--image_path", required=True, help="an image or a folder of images")
    p.add_argument("--save_dir", default="./output")
    p.add_argument("--device", default="gpu", choices=["cpu", "gpu", "npu", "xpu"])
    p.add_argument("--cpu_threads", type=int, default=1)
    args = p.parse_args()
    config = Path(args.config)
    deploy = yaml.safe_load(config.read_text())["Deploy"]
    predictor, _, _ = make_predictor(config.parent, args.device, args.cpu_threads)
    source = Path(args.image_path)
    images = sorted(p for p in source.iterdir() if p.suffix in (".png", ".jpg")) if source.is_dir() else [source]
    if not images or not all(p.is_file() for p in images):
        raise SystemExit(f"error: no image at {args.image_path}")
    os.makedirs(args.save_dir, exist_ok=True)
    colours = palette()
    for image in images:
        predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(
            preprocess(image, deploy.get("transforms", [])))
        predictor.run()
        classes = class_map(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu())
        classes = classes.astype(np.uint8)
        out = Path(args.save_dir) / f"{image.stem}.png"
        cv2.imwrite(str(out), cv2.cvtColor(colours[classes], cv2.COLOR_RGB2BGR))
        print(f"The segmentation of {image} is saved in {out}")


if __name__ == "__main__":
    main()
