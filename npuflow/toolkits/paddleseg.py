"""PaddleSeg at ``npu_cann8.0`` (seed 001).

Read from ``paddleseg/core/train.py``, ``paddleseg/utils/utils.py`` (``resume``, ``set_device``),
``tools/export.py`` and ``deploy/python/infer.py`` at that ref, and checked by running them
(tests/test_toolkits.py):

- Training writes ``<save_dir>/iter_<N>/model.pdparams`` + ``model.pdopt`` every ``--save_interval`` and at
  the last iteration (``keep_checkpoint_max`` of them), and with ``--do_eval`` ``<save_dir>/best_model/model.pdparams``.
- ``--resume_model <save_dir>/iter_<N>`` resumes: it reads both files and takes N from the folder's name.
- ``--device`` falls back to the CPU silently when the device is missing; ``set_device`` logs
  ``Set device: <place>``, which the recipes' train stage waits for (``expect_line``).
- ``tools/export.py --save_dir D`` writes ``D/model.pdmodel`` (``model.json`` on a PIR build),
  ``D/model.pdiparams`` and ``D/deploy.yaml``.
- The tools import ``paddleseg`` with no ``sys.path`` insert: the checkout must be importable (``PYTHONPATH``,
  or installed as the stage image does), or an installed paddleseg wheel of another version is used.
- ``deploy/slim/act/run_seg.py`` sets ``paddle.set_device('cpu')`` for every ``--devices`` other than ``gpu``, and
  ``deploy/slim/act/configs/datasets/`` has no Cityscapes config at this ref: the segmentation compression runs
  the project's program over PaddleSlim's ACT instead (npuflow/programs/paddleseg_act.py).
"""

from __future__ import annotations

from npuflow.toolkits import Toolkit

TOOLKIT = Toolkit(
    name="PaddleSeg",
    repository="https://github.com/PaddlePaddle/PaddleSeg",
    refs={"npu_cann8.0": "ccc3d42da49fe63b88c1698ea28aedafcb87cab9"},
    log_format="paddleseg",
    variables={
        "config_base_key": "_base_",  # how a config inherits another (a profile's overlay of the tutorial's)
        "best_model": "{save_dir}/best_model/model.pdparams",
        "checkpoint_glob": "{save_dir}/iter_*/model.pdparams",
        "exported_model_dir": "{export_dir}",
    },
    resume={
        "checkpoints": "{checkpoint_glob}",
        "companions": ["{checkpoint_dir}/model.pdopt"],
        "argv": ["--resume_model", "{checkpoint_dir}"],
    },
    upstream="PaddleSeg",
)
