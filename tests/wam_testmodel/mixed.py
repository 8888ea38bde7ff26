"""models/wam_test_mixed: a format-2 test bundle with two cameras of different sizes (exterior 8x8,
wrist 4x6), so every frame tensor is one per camera: the encode stage takes ``frames_exterior``
[1, T, 3, 8, 8] and ``frames_wrist`` [1, T, 3, 4, 6], the decode stage returns ``frames_exterior``
and ``frames_wrist`` [1, F, 3, h, w].

The function is simple enough to state exactly:

- encode: a camera's latent (every element of its [T, C, LH, LW] block) is the mean of its
  normalized frame;
- context: ``video_target`` is each camera's latent broadcast over the predicted frames;
  ``action_target`` is the mean of all latents plus the mean of the normalized state, everywhere;
- denoise: the straight-line flow toward those targets (Euler lands on them exactly);
- decode: every pixel of camera v's predicted frames is camera v's latent.

So with camera v fed a constant normalized value x_v, the predicted frames of camera v are x_v at
camera v's own size, and the normalized actions are (x_0 + x_1) / 2 + mean(state).

    python -m wam_testmodel.mixed        # rewrites models/wam_test_mixed (deterministic)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import onnx
from onnx import TensorProto, helper

from .graphs import _Builder

REPO: Final = Path(__file__).resolve().parents[2]
BUNDLE: Final = REPO / "models" / "wam_test_mixed"
MODEL_ID: Final = "wam_test_mixed_v1"
CAMERAS: Final[tuple[tuple[str, int, int], ...]] = (("exterior", 8, 8), ("wrist", 4, 6))
V: Final = len(CAMERAS)
T: Final = 1
F: Final = 2
C, LH, LW = 2, 2, 2
JOINTS: Final[tuple[str, ...]] = ("joint1", "joint2")
A: Final = len(JOINTS)
H: Final = 4
L: Final = 4
VOCAB: Final[tuple[str, ...]] = ("<pad>", "<unk>", "pick", "place", "cube")
STEPS: Final = 2


def _f32(name: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(
    b: _Builder, name: str, ins: list[onnx.ValueInfoProto], outs: list[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    return b.model(name, ins, outs, "see tests/wam_testmodel/mixed.py")


def encode_model() -> onnx.ModelProto:
    b = _Builder("encode")
    ins: list[onnx.ValueInfoProto] = []
    parts: list[str] = []
    block = b.const("block", [1, 1, T, C, LH, LW], dtype=np.int64)
    for cam, h, w in CAMERAS:
        ins.append(_f32(f"frames_{cam}", [1, T, 3, h, w]))
        mean = b.op("ReduceMean", [f"frames_{cam}"], axes=[2, 3, 4], keepdims=1)  # [1, T, 1, 1, 1]
        mean = b.op("Unsqueeze", [mean, b.const(f"axis_{cam}", [1], dtype=np.int64)])
        parts.append(b.op("Expand", [mean, block]))
    b.op("Concat", parts, "latents", axis=1)
    return _model(b, "wam_test_mixed_encode", ins, [_f32("latents", [1, V, T, C, LH, LW])])


def context_model() -> onnx.ModelProto:
    b = _Builder("context")
    ins = [
        _f32("latents", [1, V, T, C, LH, LW]),
        _f32("state", [1, A]),
        helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, L]),
    ]
    per_camera = b.op(
        "ReduceMean", ["latents"], axes=[2, 3, 4, 5], keepdims=1
    )  # [1, V, 1, 1, 1, 1]
    b.op(
        "Expand",
        [per_camera, b.const("video_shape", [1, V, F, C, LH, LW], dtype=np.int64)],
        "video_target",
    )
    total = b.op(
        "Add",
        [
            b.op("ReduceMean", ["latents"], axes=[1, 2, 3, 4, 5], keepdims=0),
            b.op("ReduceMean", ["state"], axes=[1], keepdims=0),
        ],
    )  # [1]
    total = b.op("Reshape", [total, b.const("one_one", [1, 1, 1], dtype=np.int64)])
    b.op("Expand", [total, b.const("action_shape", [1, H, A], dtype=np.int64)], "action_target")
    outs = [_f32("action_target", [1, H, A]), _f32("video_target", [1, V, F, C, LH, LW])]
    return _model(b, "wam_test_mixed_context", ins, outs)


def denoise_model() -> onnx.ModelProto:
    b = _Builder("denoise")
    ins = [
        _f32("noisy_actions", [1, H, A]),
        _f32("noisy_video", [1, V, F, C, LH, LW]),
        _f32("time", [1]),
        _f32("action_target", [1, H, A]),
        _f32("video_target", [1, V, F, C, LH, LW]),
    ]
    remaining = b.op("Sub", [b.const("one", [1.0]), "time"])
    for x, target, out in (
        ("noisy_actions", "action_target", "action_velocity"),
        ("noisy_video", "video_target", "video_velocity"),
    ):
        b.op("Div", [b.op("Sub", [target, x]), remaining], out)
    outs = [_f32("action_velocity", [1, H, A]), _f32("video_velocity", [1, V, F, C, LH, LW])]
    return _model(b, "wam_test_mixed_denoise", ins, outs)


def decode_model() -> onnx.ModelProto:
    b = _Builder("decode")
    outs = []
    for v, (cam, h, w) in enumerate(CAMERAS):
        part = b.op(
            "Slice",
            [
                "video",
                b.const(f"start_{cam}", [v], dtype=np.int64),
                b.const(f"end_{cam}", [v + 1], dtype=np.int64),
                b.const(f"axes_{cam}", [1], dtype=np.int64),
            ],
        )  # [1, 1, F, C, LH, LW]
        mean = b.op("ReduceMean", [part], axes=[3, 4, 5], keepdims=1)  # [1, 1, F, 1, 1, 1]
        mean = b.op("Reshape", [mean, b.const(f"flat_{cam}", [1, F, 1, 1, 1], dtype=np.int64)])
        shape = b.const(f"shape_{cam}", [1, F, 3, h, w], dtype=np.int64)
        b.op("Expand", [mean, shape], f"frames_{cam}")
        outs.append(_f32(f"frames_{cam}", [1, F, 3, h, w]))
    return _model(b, "wam_test_mixed_decode", [_f32("video", [1, V, F, C, LH, LW])], outs)


def manifest_text() -> str:
    cams = "".join(f"  - {{name: {c}, height: {h}, width: {w}}}\n" for c, h, w in CAMERAS)
    per_camera = ", ".join(f"{c}: frames_{c}" for c, _, _ in CAMERAS)
    return (
        "# Format-2 test bundle with cameras of different sizes, generated by\n"
        "# tests/wam_testmodel/mixed.py; do not edit.\n"
        "format_version: 2\n"
        f"model_id: {MODEL_ID}\n"
        "cameras:\n" + cams + f"context_frames: {T}\n"
        "image:\n  mean: [0.5, 0.5, 0.5]\n  std: [0.5, 0.5, 0.5]\n"
        "state:\n  joints: [joint1, joint2]\n  mean: [0.0, 0.0]\n  std: [1.0, 1.0]\n"
        "action:\n  kind: absolute_joint_position\n"
        f"  joints: [joint1, joint2]\n  horizon: {H}\n  dt: 0.1\n"
        "  mean: [0.0, 0.0]\n  std: [1.0, 1.0]\n"
        f"video:\n  frames: {F}\n  latent_shape: [{C}, {LH}, {LW}]\n"
        f"sampler:\n  steps: {STEPS}\n  solver: euler\n"
        "instruction:\n  tokenizer: vocab\n  file: vocab.txt\n"
        f"  max_tokens: {L}\n  pad_id: 0\n  unk_id: 1\n"
        "stages:\n"
        "  encode:\n    file: encode.onnx\n"
        f"    inputs: {{frames: {{{per_camera}}}}}\n"
        "    outputs: {latents: latents}\n"
        "  context:\n    file: context.onnx\n"
        "    inputs: {latents: latents, state: state, tokens: tokens}\n"
        "    outputs: [action_target, video_target]\n"
        "  denoise:\n    file: denoise.onnx\n"
        "    inputs: {actions: noisy_actions, video: noisy_video, time: time}\n"
        "    outputs: {actions: action_velocity, video: video_velocity}\n"
        "  decode:\n    file: decode.onnx\n"
        "    inputs: {latents: video}\n"
        f"    outputs: {{frames: {{{per_camera}}}}}\n"
    )


def write_bundle(out: Path = BUNDLE) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        f"{name}.onnx": model.SerializeToString(deterministic=True)
        for name, model in (
            ("encode", encode_model()),
            ("context", context_model()),
            ("denoise", denoise_model()),
            ("decode", decode_model()),
        )
    }
    files["wam.yaml"] = manifest_text().encode()
    files["vocab.txt"] = "".join(f"{w}\n" for w in VOCAB).encode()
    written = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="wam_testmodel.mixed", description=__doc__).parse_args(argv)
    for p in write_bundle():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
