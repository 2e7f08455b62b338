"""PaddleDetection at ``release_2_7_npu`` (seeds 000 and 002).

The only ref modelled: ``release/2.6``'s ``configs/runtime.yml`` sets ``use_gpu: true`` and ``check_gpu`` exits on
an NPU build, while ``release_2_7_npu``'s sets ``use_npu: true`` and ships both ``configs/picodet/
picodet_s_416_coco_npu.yml`` and ``deploy/auto_compression/configs/picodet_s_qat_dis.yaml``: one checkout serves
both detection DAGs.

Read from ``ppdet/engine/callbacks.py`` (``Checkpointer``), ``ppdet/utils/checkpoint.py`` (``save_model``,
``load_weight``) and ``ppdet/engine/trainer.py`` (``export``) at that ref, and checked by running its
``tools/train.py`` and ``tools/export_model.py`` (tests/test_toolkits.py):

- Training writes into the config's ``save_dir`` itself, with no config-name folder: ``<epoch>.pdparams`` +
  ``.pdopt`` (+ ``.pdema`` with EMA) every ``snapshot_epoch``, ``model_final.*`` after the last epoch, and with
  ``--eval`` ``best_model.pdparams`` and ``best_model/model.pdparams``. The configs set ``save_dir`` to
  different places (``output``; PP-YOLOE+'s ``./output/ppyoloe_plus_crn_l_80e_coco/pipeline``), so every
  recipe passes ``-o save_dir=`` under its run folder and the layout below holds for every config.
- ``-r <path without extension>`` resumes: ``load_weight`` reads ``.pdparams`` and ``.pdopt`` (``last_epoch``)
  and, when the model uses EMA, ``.pdema``.
- ``tools/export_model.py --output_dir D`` writes ``D/<config file stem>/model.pdmodel|model.pdiparams|infer_cfg.yml``.
- ``deploy/auto_compression/run.py --save_dir D`` writes ``D/model.pdmodel|model.pdiparams``; it and
  ``eval.py`` import ``ppdet`` with no ``sys.path`` insert of their own (unlike ``tools/*.py``), so the
  checkout must be importable (``PYTHONPATH``, or installed as the stage image does). ``eval.py`` needs
  ``Global.input_list`` in its config (the shipped detector configs have none; ``run.py`` derives it).
"""

from __future__ import annotations

from npuflow.toolkits import Toolkit

TOOLKIT = Toolkit(
    name="PaddleDetection",
    repository="https://github.com/PaddlePaddle/PaddleDetection",
    refs={"release_2_7_npu": "f88cf9e1ad205c3f8ca1e99bdd3233144a429c96"},
    log_format="ppdet",
    variables={
        "config_base_key": "_BASE_",  # how a config inherits another (a profile's overlay of the tutorial's)
        "best_model": "{save_dir}/best_model.pdparams",
        "checkpoint_glob": "{save_dir}/[0-9]*.pdparams",
        "exported_model_dir": "{export_dir}/{config_name}",
        # deploy/auto_compression/eval.py feeds only Global.input_list, which run.py derives from the model but
        # eval.py does not, and which the shipped picodet/ppyoloe ACT configs lack (KeyError: 'input_list'):
        # the inputs tools/export_model.py gives a detector with its post-processing.
        "act_eval_input_list": "[image, scale_factor]",
    },
    resume={
        "checkpoints": "{checkpoint_glob}",
        "companions": ["{checkpoint_stem}.pdopt"],
        "argv": ["-r", "{checkpoint_stem}"],
    },
    upstream="PaddleDetection",
)
