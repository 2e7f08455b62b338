"""Image dimensions from file headers only: validating train2017 must not decode 118k JPEGs."""

from __future__ import annotations

import struct
from pathlib import Path

# JPEG start-of-frame markers that carry the dimensions (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageHeaderError(ValueError):
    """The file is not a readable JPEG or PNG."""


def _jpeg_size(fh) -> tuple[int, int]:
    while True:
        byte = fh.read(1)
        while byte and byte != b"\xff":
            byte = fh.read(1)
        while byte == b"\xff":
            byte = fh.read(1)
        if not byte:
            raise ImageHeaderError("JPEG ends before a frame header")
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        raw = fh.read(2)
        if len(raw) < 2:
            raise ImageHeaderError("JPEG segment truncated")
        length = struct.unpack(">H", raw)[0]
        if marker in _SOF:
            data = fh.read(5)
            if len(data) < 5:
                raise ImageHeaderError("JPEG frame header truncated")
            height, width = struct.unpack(">HH", data[1:5])
            return width, height
        fh.seek(length - 2, 1)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG, reading at most a few KB."""
    with open(path, "rb") as fh:
        head = fh.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise ImageHeaderError("PNG without IHDR")
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"\xff\xd8":
            fh.seek(2)
            return _jpeg_size(fh)
    raise ImageHeaderError("neither JPEG nor PNG")
