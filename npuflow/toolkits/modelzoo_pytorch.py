"""Ascend ModelZoo-PyTorch at ``master`` (seeds 003 and 004): the YOLOR port (``PyTorch/contrib/cv/detection/YOLOR``)
and the SSD port (``PyTorch/contrib/cv/detection/SSD``, MMDetection 2.6.0 on mmcv 1.2.7).

YOLOR:

Read from the port's ``train.py``, ``test.py``, ``test/train_full_8p.sh`` and ``test/env_npu.sh`` at commit
6a2804a, and checked by running its ``train.py`` and ``test.py`` (tests/test_toolkits.py, tests/test_yolor_port.py):

- ``train.py`` is its own launcher: ``--device-num N`` (> 1) starts N ranks with ``mp.spawn`` (``MASTER_PORT``
  29501, ``--addr`` the master); ``--local_rank`` is the node's index (``local_rank * N + rank``), ``-1`` for one
  process. It opens a process group only for ``cuda`` (nccl) and ``npu`` (hccl): on a CPU it trains as one
  process (``--device cpu --local_rank -1 --device-num 1``; with ``--local_rank 0`` it asks for a process group
  nobody opened).
- ``test/train_full_8p.sh`` is not run: it links ``--data_path`` over the checkout's ``data/coco``, logs every
  rank to ``test/output/<id>/train_<id>.log`` (never the console), drops the exit status (``... &`` then a bare
  ``wait``) and hard-codes ``--epochs 300 --batch-size 64``. The recipe runs the command it starts (its non-aarch64
  line: ``python3 train.py ... --device-num 8``) with the same flags; tests/test_yolor_port.py holds the two together.
- Outputs: ``<--project>/<--name>/weights/``; ``--exist-ok`` keeps that folder fixed (else ``increment_path`` adds a
  suffix on every rerun). ``last.pt`` every epoch (its optimizer stripped after the last), ``epoch_000.pt`` and every
  25th ``epoch_NNN.pt``, ``last_NNN.pt`` for the final five epochs; no ``best.pt``.
- ``--resume <ckpt>`` is broken at this commit: it replaces the options with ``<ckpt>/../../opt.yaml``, clears
  ``cfg`` and builds ``Darknet('')`` (``FileNotFoundError: '.cfg'``). ``--weights <last.pt>`` with the run's own
  flags resumes instead: model and optimizer loaded, training continues at the checkpoint's epoch + 1.
- Log: ``Epoch:[%2g][%4g/%4g][<device>][FPS:..][mTime:..][pTime:..][dTime:..] GIoU:.. objectness:..
  classfication:.. totalLoss:..`` from rank 0, FPS over all cards (``--batch-size`` is the total); a non-finite
  loss prints ``WARNING: non-finite loss, ending training`` and exits 0. ``test.py`` prints its own mAP line
  (``all <images> <targets> P R mAP@.5 mAP@.5:.95``) and, with ``--save-json``, pycocotools' table.
- ``test.py`` maps class i to COCO's id with ``coco80_to_coco91_class`` only when ``--data`` ends in ``coco.yaml``,
  and reads the ground truth from ``<data.path>/annotations/instances_val2017.json``.
"""

from __future__ import annotations

from npuflow.toolkits import Toolkit

TOOLKIT = Toolkit(
    name="ModelZoo-PyTorch",
    repository="https://gitee.com/ascend/ModelZoo-PyTorch",
    refs={"master": "6a2804a358a5b18e3dac1ab902f41f88e240b00f"},
    log_format="yolor",
    variables={"yolor_dir": "{toolkit_checkout}/PyTorch/contrib/cv/detection/YOLOR",
               "ssd_dir": "{toolkit_checkout}/PyTorch/contrib/cv/detection/SSD"},
    upstream="ModelZoo-PyTorch",
)
