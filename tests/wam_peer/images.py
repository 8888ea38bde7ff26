"""Image messages for the node's camera inputs: every raw encoding it accepts (with optional row
padding), PNG for the compressed transport, and conversions back from its rgb8 outputs.

Pixels are handled as ``uint8`` arrays of shape ``[H, W, 3]`` (RGB) or ``[H, W]`` (gray).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np
from numpy.typing import NDArray
from sensor_msgs.msg import CompressedImage, Image

__all__ = [
    "ENCODINGS",
    "U8",
    "uniform_rgb",
    "gradient_rgb",
    "checker_rgb",
    "encode_pixels",
    "raw_image",
    "png_bytes",
    "compressed_image",
    "rgb_of",
    "to_unit",
]

U8 = NDArray[np.uint8]

#: Raw encodings the node accepts, with their channel count.
ENCODINGS: Final[dict[str, int]] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

#: Value of row padding bytes, far from every test colour so that reading it shows.
PAD_BYTE: Final = 0xEE


def uniform_rgb(width: int, height: int, rgb: tuple[int, int, int]) -> U8:
    """[H, W, 3] image of one colour."""
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:, :] = np.asarray(rgb, dtype=np.uint8)
    return out


def gradient_rgb(width: int, height: int, offset: int = 0) -> U8:
    """[H, W, 3] non-uniform image: R follows x, G follows y, B is their mix."""
    y, x = np.mgrid[0:height, 0:width]
    r = (offset + 7 * x) % 256
    g = (offset + 5 * y + 40) % 256
    b = (offset + 3 * x + 2 * y + 90) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def checker_rgb(width: int, height: int, a: int, b: int, cell: int = 4) -> U8:
    """[H, W, 3] gray checkerboard of values ``a`` and ``b`` with square cells of ``cell`` px."""
    y, x = np.mgrid[0:height, 0:width]
    v = np.where(((x // cell) + (y // cell)) % 2 == 0, a, b).astype(np.uint8)
    return np.repeat(v[:, :, None], 3, axis=2)


def encode_pixels(rgb: U8, encoding: str, pad: int = 0) -> tuple[bytes, int]:
    """Packs ``rgb`` ([H, W, 3], or [H, W] gray for mono8) as ``encoding`` rows of
    ``width * channels + pad`` bytes. Returns (data, step). Alpha is 255; for mono8 an RGB
    input must be gray (equal channels)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}")
    px = np.asarray(rgb, dtype=np.uint8)
    if encoding == "mono8":
        if px.ndim == 3:
            if not (np.all(px[..., 0] == px[..., 1]) and np.all(px[..., 1] == px[..., 2])):
                raise ValueError("mono8 needs a gray image")
            px = px[..., 0]
        packed = px[:, :, None]
    else:
        if px.ndim != 3 or px.shape[2] != 3:
            raise ValueError("expected an [H, W, 3] image")
        chans = px if encoding in ("rgb8", "rgba8") else px[..., ::-1]
        if ENCODINGS[encoding] == 4:
            alpha = np.full(px.shape[:2] + (1,), 255, dtype=np.uint8)
            chans = np.concatenate([chans, alpha], axis=2)
        packed = chans
    height, width = packed.shape[:2]
    row = width * packed.shape[2]
    step = row + pad
    out = np.full((height, step), PAD_BYTE, dtype=np.uint8)
    out[:, :row] = packed.reshape(height, row)
    return out.tobytes(), step


def raw_image(rgb: U8, encoding: str = "rgb8", pad: int = 0, frame_id: str = "") -> Image:
    """sensor_msgs/Image of ``rgb`` (stamp left at zero: the sender sets it)."""
    data, step = encode_pixels(rgb, encoding, pad)
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height = int(np.asarray(rgb).shape[0])
    msg.width = int(np.asarray(rgb).shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_bytes(rgb: U8) -> bytes:
    """Minimal PNG encoder: 8-bit RGB ([H, W, 3]) or gray ([H, W]), filter 0 on every row."""
    px = np.asarray(rgb, dtype=np.uint8)
    color_type = 2 if px.ndim == 3 else 0
    height, width = px.shape[:2]
    rows = px.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def compressed_image(rgb: U8, frame_id: str = "") -> CompressedImage:
    """sensor_msgs/CompressedImage holding ``rgb`` as PNG (stamp left at zero)."""
    msg = CompressedImage()
    msg.header.frame_id = frame_id
    msg.format = "rgb8; png compressed rgb8"
    msg.data = png_bytes(rgb)
    return msg


def rgb_of(msg: Image) -> U8:
    """[H, W, 3] pixels of an rgb8 Image (row padding dropped)."""
    if msg.encoding != "rgb8":
        raise ValueError(f"expected rgb8, got {msg.encoding!r}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = data[: msg.step * msg.height].reshape(msg.height, msg.step)
    return rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3).copy()


def to_unit(rgb: U8) -> NDArray[np.float64]:
    """[H, W, 3] u8 (or [H, W] gray) -> [3, H, W] float64 pixels in [0, 1], as the model sees
    them."""
    px = np.asarray(rgb, dtype=np.float64) / 255.0
    if px.ndim == 2:
        px = np.repeat(px[:, :, None], 3, axis=2)
    return np.transpose(px, (2, 0, 1))
