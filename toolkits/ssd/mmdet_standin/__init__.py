"""The pieces of MMDetection 2.x that the ModelZoo SSD port's command line and work dir depend on.

The port itself needs mmcv 1.x built from source with NPU patches (no wheel on any registry; FACTS), so the CPU
smoke profile runs this stand-in: the same ``tools/train.py`` flags, the same Python config files with
``--cfg-options``, and the same work dir (``epoch_N.pth``, ``latest.pth``, ``<timestamp>.log.json``), training
torchvision's SSD (the architecture of the seed) under torchrun.
"""
