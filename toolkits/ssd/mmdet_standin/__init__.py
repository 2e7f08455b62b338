"""The pieces of MMDetection 2.x that the ModelZoo SSD port's command line and work dir depend on.

The port's training calls Ascend-only operators and device APIs that have no CPU path (docs/architecture.md,
"What of the SSD port runs here"), so the CPU smoke profile runs this stand-in: the same ``tools/train.py`` flags,
its config loaded and overridden by the port's own loader (mmcv 1.2.7's ``Config`` and ``DictAction``), the same
``--cfg-options`` keys as production, and the same work dir (``epoch_N.pth``, ``latest.pth``,
``<timestamp>.log.json``), training torchvision's SSD family under torchrun.
"""
