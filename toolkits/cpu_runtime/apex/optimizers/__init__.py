"""``apex.optimizers``: Ascend's NPU-fused optimizers (``NpuFusedSGD``...), of which a CPU has none. The SSD port's
``mmcv_need/builder.py`` registers every optimizer class it finds here when ``mmcv.runner`` is imported."""
