"""What a saved Paddle inference program holds, read without paddle (the Airflow side has none; the benchmark
programs use the same count, so the stage that compresses and the stage that measures agree).

In a ``.pdmodel`` (a ProgramDesc protobuf) an op's type is OpDesc field 3, a length-prefixed string: tag 0x1a,
one length byte for a short name, the name. A PIR ``.json`` program (paddle 3) names ops ``"pd_op.<type>"``.
Python 3.9 compatible: the toolkit's interpreter imports it too.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_PDMODEL_OP = re.compile(rb"\x1a([\x01-\x7f])([a-z][a-z0-9_]*)")
_PIR_OP = re.compile(r'"pd_op\.([a-z][a-z0-9_]*)"')


def op_types(program: Path) -> Counter:
    """How many ops of each type the program holds."""
    if program.suffix == ".json":
        return Counter(_PIR_OP.findall(program.read_text(errors="replace")))
    return Counter(name.decode() for size, name in _PDMODEL_OP.findall(program.read_bytes()) if len(name) == size[0])


def quantize_ops(program: Path) -> int:
    """Quantize/dequantize ops: 0 for an FP32 model, many for a QAT model (QDQ ``quantize_linear`` pairs, or the
    older ``fake_*quantize*`` ops)."""
    return sum(n for t, n in op_types(program).items()
               if t in ("quantize_linear", "dequantize_linear") or (t.startswith("fake_") and "quantize" in t))
