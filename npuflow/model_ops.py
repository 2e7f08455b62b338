"""What a saved inference model holds, read without its framework (the Airflow side has neither paddle nor onnx;
the benchmark programs use the same count, so the stage that compresses and the stage that measures agree).

- A Paddle ``.pdmodel`` (ProgramDesc protobuf): an op's type is OpDesc field 3, a length-prefixed string (tag
  0x1a, one length byte for a short name, the name). A PIR ``.json`` program (paddle 3) names ops ``"pd_op.<type>"``.
- An ONNX ``.onnx`` (ModelProto protobuf): a node's ``op_type`` is NodeProto field 4 (tag 0x22), e.g.
  ``QuantizeLinear``. Initializer bytes could mimic a tag; the length byte must match and op types are
  CamelCase words of two letters or more (every node, in If/Loop bodies too; checked against onnx), so a stray
  match needs a tensor that spells one out.
Python 3.9 compatible: the toolkit's interpreter imports it too.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_PDMODEL_OP = re.compile(rb"\x1a([\x01-\x7f])([a-z][a-z0-9_]*)")
_PIR_OP = re.compile(r'"pd_op\.([a-z][a-z0-9_]*)"')
_ONNX_OP = re.compile(rb"\x22([\x02-\x7f])([A-Z][A-Za-z0-9]+)")


def _matches(pattern: re.Pattern[bytes], data: bytes) -> Counter:
    return Counter(name.decode() for size, name in pattern.findall(data) if len(name) == size[0])


def op_types(program: Path) -> Counter:
    """How many ops (nodes) of each type the program holds."""
    if program.suffix == ".json":
        return Counter(_PIR_OP.findall(program.read_text(errors="replace")))
    if program.suffix == ".onnx":
        return _matches(_ONNX_OP, program.read_bytes())
    return _matches(_PDMODEL_OP, program.read_bytes())


def quantize_ops(program: Path) -> int:
    """Quantize/dequantize ops: 0 for an FP32 model, many for a QAT model (Paddle's ``quantize_linear`` pairs or
    the older ``fake_*quantize*`` ops; ONNX ``QuantizeLinear``/``DequantizeLinear`` nodes)."""
    return sum(n for t, n in op_types(program).items()
               if t in ("quantize_linear", "dequantize_linear", "QuantizeLinear", "DequantizeLinear")
               or (t.startswith("fake_") and "quantize" in t))
