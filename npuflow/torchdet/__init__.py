"""PyTorch detection plumbing shared by the PyTorch stand-ins and the project's PyTorch programs.

Heavy (torch, torchvision, PIL): imported only by processes that run under the toolkit's interpreter (the
stand-ins' train.py, ``npuflow.programs.torch_export`` / ``torch_qat``), never by kinds, DAG files or Airflow.

Every detector here follows torchvision's detection convention, so export and QAT are model-agnostic:
``model(images, targets)`` in train mode returns a dict of losses, ``model(images)`` in eval mode returns one
dict per image with ``boxes`` (x1, y1, x2, y2 in input pixels), ``scores`` and ``labels`` (1..K; 0 is the
background). A toolkit opts in with an *adapter* module (see :mod:`npuflow.torchdet.adapter`).
"""
