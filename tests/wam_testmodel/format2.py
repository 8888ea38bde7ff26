"""Format-2 test bundles `models/wam_test_state` (f32) and `models/wam_test_state_f16`, and their
numpy reference (docs/bundle_format.md, "Format 2").

``python -m wam_testmodel.format2`` (with ``PYTHONPATH=tests``) writes both bundles and the fixture
``tests/fixtures/wam_test_state_reference.json`` that tests/runtime_format2.rs compares the node with.

The model is tiny and deterministic. Its context stage carries two state tensors across chunks,
``past_k`` [1, 1, M, 3] and ``past_v`` [1, 1, M, 1] (position axis 2, M = 4, block B = 2), writes
its new block at positions [length, length + B) and reads every valid position back (a sum standing
in for attention), so the actions depend on the chunks seen since the last clear and on the slide
that drops the oldest block. The denoise stage is the straight-line flow of the format-1 test model,
velocity = (target - x) / (1 - t) + 0.3 t, with a dynamic batch (``denoise.onnx``, batched guidance) and a
fixed batch of 1 (``denoise_fixed.onnx``, two runs); ``denoise_direct.onnx`` is a one-shot model for
solver ``none`` (outputs = target + x + (t - 1), the target exactly at x = 0, t = 1). The f16 bundle
has the same graphs with every float input and output declared float16 (cast at the graph's edges).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
from onnx import TensorProto, helper

from .graphs import _Builder

MODEL_ID: Final = "wam_test_state_v1"
CAMERAS: Final[tuple[str, ...]] = ("exterior",)
HEIGHT: Final = 8
WIDTH: Final = 8
POOL: Final = 4
C: Final = 3
LH: Final = HEIGHT // POOL
LW: Final = WIDTH // POOL
V: Final = 1
T: Final = 1
F: Final = 1
JOINTS: Final[tuple[str, ...]] = ("joint1", "joint2")
S: Final = len(JOINTS)
A: Final = S
H: Final = 4
L: Final = 4
PAD_ID: Final = 0
VOCAB: Final[tuple[str, ...]] = ("<pad>", "<unk>", "pick", "place", "cube")
STATE_MEAN: Final[tuple[float, ...]] = (0.1, -0.2)
STATE_STD: Final[tuple[float, ...]] = (2.0, 0.5)
ACTION_MEAN: Final[tuple[float, ...]] = (0.0, 0.1)
ACTION_STD: Final[tuple[float, ...]] = (0.5, 2.0)
STEPS: Final = 4
M: Final = 4  # maximum state length
B: Final = 2  # block per chunk
DK: Final = C
DV: Final = 1

# Coefficients of the context function (see `context_reference`).
TOKEN_GAIN: Final = 0.01
POSITION_GAIN: Final = 0.1
BLOCK_STEP_K: Final = 0.01
BLOCK_STEP_V: Final = 0.5
ACTION_GAIN_K: Final = 0.1
ACTION_GAIN_V: Final = 0.05
VIDEO_GAIN_K: Final = 0.02
VIDEO_GAIN_TOKEN: Final = 0.5
# The denoise field's drift DRIFT * t: off the straight line, so that a reused evaluation changes the
# result (on a straight-line field Euler is exact and reuse would change nothing).
DRIFT: Final = 0.3

FRAMES_SHAPE: Final = (1, V, T, 3, HEIGHT, WIDTH)
LATENTS_SHAPE: Final = (1, V, T, C, LH, LW)
VIDEO_SHAPE: Final = (1, V, F, C, LH, LW)
ACTIONS_SHAPE: Final = (1, H, A)
PAST_K_SHAPE: Final = (1, 1, M, DK)
PAST_V_SHAPE: Final = (1, 1, M, DV)

REPO: Final = Path(__file__).resolve().parents[2]
FIXTURE: Final = REPO / "tests" / "fixtures" / "wam_test_state_reference.json"
BUNDLES: Final[dict[str, Path]] = {
    "f32": REPO / "models" / "wam_test_state",
    "f16": REPO / "models" / "wam_test_state_f16",
}
CHUNKS: Final = 6


class _Graph:
    """A builder whose float inputs and outputs are float16 at the edges when ``half``: inputs are cast
    to float32 first and outputs cast back, so the f32 and f16 graphs compute the same function."""

    def __init__(self, prefix: str, half: bool) -> None:
        self.b = _Builder(prefix)
        self.half = half
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._casts: list[onnx.NodeProto] = []
        self._float = TensorProto.FLOAT16 if half else TensorProto.FLOAT

    def float_in(self, name: str, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, self._float, list(shape)))
        return self.b.op("Cast", [name], to=TensorProto.FLOAT) if self.half else name

    def int_in(self, name: str, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(shape)))
        return name

    def float_out(self, name: str, shape: Sequence[int | str]) -> str:
        """The name the graph's computation must write (cast to ``name`` when half)."""
        self.outputs.append(helper.make_tensor_value_info(name, self._float, list(shape)))
        if not self.half:
            return name
        inner = f"{name}_f32"
        self._casts.append(
            helper.make_node(
                "Cast", [inner], [name], name=f"{self.b.prefix}/cast_{name}", to=self._float
            )
        )
        return inner

    def model(self, name: str, doc: str) -> onnx.ModelProto:
        # The output casts come last (nodes are in topological order).
        self.b.nodes.extend(self._casts)
        return self.b.model(name, self.inputs, self.outputs, doc)


def encode_model(half: bool) -> onnx.ModelProto:
    g = _Graph("encode", half)
    x = g.float_in("frames", FRAMES_SHAPE)
    out = g.float_out("latents", LATENTS_SHAPE)
    blocks = g.b.const("block_shape", [1, V, T, C, LH, POOL, LW, POOL], np.int64)
    g.b.op("ReduceMean", [g.b.op("Reshape", [x, blocks])], out, axes=[5, 7], keepdims=0)
    return g.model("wam_test_state_encode", "latents = 4x4 average pool of the normalized frames")


def context_model(half: bool) -> onnx.ModelProto:
    g = _Graph("context", half)
    b = g.b
    latents = g.float_in("latents", LATENTS_SHAPE)
    state = g.float_in("state", (1, S))
    tokens = g.int_in("tokens", (1, L))
    past_k = g.float_in("past_k", PAST_K_SHAPE)
    past_v = g.float_in("past_v", PAST_V_SHAPE)
    length = g.int_in("past_length", (1,))
    position = g.int_in("chunk_index", (1,))
    out_actions = g.float_out("action_target", ACTIONS_SHAPE)
    out_video = g.float_out("video_target", VIDEO_SHAPE)
    out_k = g.float_out("present_k", PAST_K_SHAPE)
    out_v = g.float_out("present_v", PAST_V_SHAPE)

    # Features of the new observation: per-channel latent mean [1, C], token sum, position.
    lat_mean = b.op("ReduceMean", [latents], axes=[1, 2, 4, 5], keepdims=0)  # [1, C]
    tokens_f = b.op("Cast", [tokens], to=TensorProto.FLOAT)
    tok = b.op(
        "Mul",
        [
            b.op("ReduceSum", [tokens_f, b.const("tok_axis", [1], np.int64)], keepdims=1),
            b.const("token_gain", TOKEN_GAIN),
        ],
    )  # [1, 1]
    pos_f = b.op("Cast", [position], to=TensorProto.FLOAT)
    pos = b.op("Mul", [pos_f, b.const("pg", POSITION_GAIN)])
    k_row = b.op("Add", [b.op("Add", [lat_mean, tok]), pos])  # [1, C]
    k_row4 = b.op("Reshape", [k_row, b.const("k_row_shape", [1, 1, 1, DK], np.int64)])
    k_steps = (BLOCK_STEP_K * np.arange(B, dtype=np.float32)).reshape(1, 1, B, 1)
    k_new = b.op("Add", [k_row4, b.const("k_steps", k_steps)])  # [1, 1, B, DK]
    v_row = b.op("ReduceMean", [state], axes=[1], keepdims=1)  # [1, 1]
    v_row4 = b.op("Reshape", [v_row, b.const("v_row_shape", [1, 1, 1, 1], np.int64)])
    v_steps = (BLOCK_STEP_V * np.arange(B, dtype=np.float32)).reshape(1, 1, B, 1)
    v_new = b.op("Add", [v_row4, b.const("v_steps", v_steps)])  # [1, 1, B, DV]

    # Write the block at [length, length + B): present = where(mask, gather(new, clip(p - length)), past).
    idx = b.const("positions", np.arange(M), np.int64)
    rel = b.op("Sub", [idx, length])  # [M]
    in_block = b.op(
        "And",
        [
            b.op("GreaterOrEqual", [rel, b.const("zero_i", [0], np.int64)]),
            b.op("Less", [rel, b.const("block_i", [B], np.int64)]),
        ],
    )
    lo = b.const("clip_lo", np.int64(0), np.int64)
    hi = b.const("clip_hi", np.int64(B - 1), np.int64)
    gather_idx = b.op("Clip", [rel, lo, hi])
    mask4 = b.op("Reshape", [in_block, b.const("mask_shape", [1, 1, M, 1], np.int64)])
    b.op("Where", [mask4, b.op("Gather", [k_new, gather_idx], axis=2), past_k], out_k)
    b.op("Where", [mask4, b.op("Gather", [v_new, gather_idx], axis=2), past_v], out_v)

    # Read every valid position back: s_k, s_v = sums over p < length + B.
    valid = b.op(
        "Cast",
        [b.op("Less", [idx, b.op("Add", [length, b.const("block_j", [B], np.int64)])])],
        to=TensorProto.FLOAT,
    )
    valid4 = b.op("Reshape", [valid, b.const("valid_shape", [1, 1, M, 1], np.int64)])
    s_k = b.op("ReduceSum", [b.op("Mul", [out_k, valid4])], keepdims=0)  # scalar
    s_v = b.op("ReduceSum", [b.op("Mul", [out_v, valid4])], keepdims=0)

    # action_target = state + ACTION_GAIN_K s_k (i + 1) / H + ACTION_GAIN_V s_v   [1, H, A]
    steps = (np.arange(1, H + 1, dtype=np.float32) / H).reshape(1, H, 1)
    ramp = b.op("Mul", [b.op("Mul", [s_k, b.const("agk", ACTION_GAIN_K)]), b.const("ramp", steps)])
    state3 = b.op("Reshape", [state, b.const("state3", [1, 1, S], np.int64)])
    b.op(
        "Add",
        [b.op("Add", [state3, ramp]), b.op("Mul", [s_v, b.const("agv", ACTION_GAIN_V)])],
        out_actions,
    )
    # video_target = latents + VIDEO_GAIN_K s_k + VIDEO_GAIN_TOKEN tok   (T = F = 1: same shape)
    tok6 = b.op("Reshape", [tok, b.const("tok6", [1, 1, 1, 1, 1, 1], np.int64)])
    b.op(
        "Add",
        [
            b.op("Add", [latents, b.op("Mul", [s_k, b.const("vgk", VIDEO_GAIN_K)])]),
            b.op("Mul", [tok6, b.const("vgt", VIDEO_GAIN_TOKEN)]),
        ],
        out_video,
    )
    return g.model("wam_test_state_context", "targets from the observation and the carried state")


def denoise_model(half: bool, batch: int | str, direct: bool = False) -> onnx.ModelProto:
    """velocity = (target - x) / (1 - t) + DRIFT t (``direct``: target + x + (t - 1)), batch
    ``batch``."""
    g = _Graph("denoise", half)
    b = g.b
    xa = g.float_in("noisy_actions", (batch, H, A))
    xv = g.float_in("noisy_video", (batch, V, F, C, LH, LW))
    t = g.float_in("time", (batch,))
    ta = g.float_in("action_target", (batch, H, A))
    tv = g.float_in("video_target", (batch, V, F, C, LH, LW))
    out_a = g.float_out("action_velocity", (batch, H, A))
    out_v = g.float_out("video_velocity", (batch, V, F, C, LH, LW))
    for x, target, out, rank in ((xa, ta, out_a, 3), (xv, tv, out_v, 6)):
        t_b = b.op("Reshape", [t, b.const(f"t_shape{rank}", [-1] + [1] * (rank - 1), np.int64)])
        if direct:
            shifted = b.op("Sub", [t_b, b.const(f"one{rank}", [1.0])])
            b.op("Add", [b.op("Add", [target, x]), shifted], out)
        else:
            remaining = b.op("Sub", [b.const(f"one{rank}", [1.0]), t_b])
            drift = b.op("Mul", [t_b, b.const(f"drift{rank}", [DRIFT])])
            b.op("Add", [b.op("Div", [b.op("Sub", [target, x]), remaining]), drift], out)
    kind = "direct" if direct else "flow"
    return g.model(f"wam_test_state_denoise_{kind}", "straight-line flow (or a one-shot model)")


def stage_models(half: bool) -> dict[str, onnx.ModelProto]:
    return {
        "encode.onnx": encode_model(half),
        "context.onnx": context_model(half),
        "denoise.onnx": denoise_model(half, "batch"),
        "denoise_fixed.onnx": denoise_model(half, 1),
        "denoise_direct.onnx": denoise_model(half, 1, direct=True),
    }


def _flow(values: Sequence[object]) -> str:
    return "[" + ", ".join(repr(v) if isinstance(v, float) else str(v) for v in values) + "]"


def manifest_text(
    *,
    model_id: str = MODEL_ID,
    solver: str = "euler",
    steps: int = STEPS,
    guidance: tuple[float, Sequence[str]] | None = None,
    reuse: Sequence[int] | None = None,
    denoise_file: str = "denoise.onnx",
) -> str:
    """The wam.yaml of a format-2 test bundle with the given sampler options."""
    sampler = f"sampler:\n  steps: {steps}\n  solver: {solver}\n"
    if guidance is not None:
        sampler += f"  guidance:\n    scale: {guidance[0]!r}\n    apply_to: {_flow(guidance[1])}\n"
    if reuse is not None:
        sampler += f"  reuse: {_flow(reuse)}\n"
    return (
        "# Format-2 test bundle generated by tests/wam_testmodel/format2.py; do not edit.\n"
        "format_version: 2\n"
        f"model_id: {model_id}\n"
        "cameras:\n"
        + "".join(f"  - {{name: {c}, height: {HEIGHT}, width: {WIDTH}}}\n" for c in CAMERAS)
        + f"context_frames: {T}\n"
        "image:\n  mean: [0.5, 0.5, 0.5]\n  std: [0.5, 0.5, 0.5]\n"
        f"state:\n  joints: {_flow(JOINTS)}\n  mean: {_flow(STATE_MEAN)}\n  std: {_flow(STATE_STD)}\n"
        "action:\n  kind: absolute_joint_position\n"
        f"  joints: {_flow(JOINTS)}\n  horizon: {H}\n  dt: 0.1\n"
        f"  mean: {_flow(ACTION_MEAN)}\n  std: {_flow(ACTION_STD)}\n"
        f"video:\n  frames: {F}\n  latent_shape: {_flow((C, LH, LW))}\n"
        + sampler
        + "instruction:\n  tokenizer: vocab\n  file: vocab.txt\n"
        f"  max_tokens: {L}\n  pad_id: {PAD_ID}\n  unk_id: 1\n"
        "stages:\n"
        "  encode:\n    file: encode.onnx\n    inputs: {frames: frames}\n"
        "    outputs: {latents: latents}\n"
        "  context:\n    file: context.onnx\n"
        "    inputs: {latents: latents, state: state, tokens: tokens}\n"
        "    outputs: [action_target, video_target]\n"
        "    state:\n"
        "      tensors:\n"
        "        - {input: past_k, output: present_k}\n"
        "        - {input: past_v, output: present_v}\n"
        f"      axis: 2\n      block: {B}\n"
        "      length: past_length\n      position: chunk_index\n"
        f"  denoise:\n    file: {denoise_file}\n"
        "    inputs: {actions: noisy_actions, video: noisy_video, time: time}\n"
        "    outputs: {actions: action_velocity, video: video_velocity}\n"
    )


# --- numpy reference (float64) ---


def encode_reference(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(1, V, T, C, LH, POOL, LW, POOL).mean(axis=(5, 7))


def context_reference(
    latents: np.ndarray,
    state: np.ndarray,
    tokens: np.ndarray,
    past_k: np.ndarray,
    past_v: np.ndarray,
    length: int,
    position: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(action_target [1,H,A], video_target, present_k, present_v) as the context graph computes."""
    lat_mean = latents.mean(axis=(1, 2, 4, 5))  # [1, C]
    tok = TOKEN_GAIN * float(tokens.sum())
    k_row = lat_mean[0] + tok + POSITION_GAIN * position
    v_row = float(state.mean())
    present_k, present_v = past_k.copy(), past_v.copy()
    for j in range(B):
        p = length + j
        if 0 <= p < M:
            present_k[0, 0, p, :] = k_row + BLOCK_STEP_K * j
            present_v[0, 0, p, :] = v_row + BLOCK_STEP_V * j
    valid = min(length + B, M)
    s_k = float(present_k[0, 0, :valid].sum())
    s_v = float(present_v[0, 0, :valid].sum())
    ramp = (np.arange(1, H + 1) / H).reshape(1, H, 1)
    actions = state.reshape(1, 1, S) + ACTION_GAIN_K * s_k * ramp + ACTION_GAIN_V * s_v
    video = latents + VIDEO_GAIN_K * s_k + VIDEO_GAIN_TOKEN * tok
    return actions, video, present_k, present_v


class StateRef:
    """The runtime's carried state: commit (+ slide) and clear."""

    def __init__(self) -> None:
        self.k = np.zeros(PAST_K_SHAPE)
        self.v = np.zeros(PAST_V_SHAPE)
        self.length = 0
        self.position = 0

    def commit(self, present_k: np.ndarray, present_v: np.ndarray) -> None:
        self.k, self.v = present_k.copy(), present_v.copy()
        self.length += B
        self.position += 1
        if self.length + B > M:
            # Slide: drop the oldest B positions, zero the tail.
            self.k = np.concatenate([self.k[:, :, B:], np.zeros_like(self.k[:, :, :B])], axis=2)
            self.v = np.concatenate([self.v[:, :, B:], np.zeros_like(self.v[:, :, :B])], axis=2)
            self.length -= B


def sample_reference(
    x_a: np.ndarray,
    x_v: np.ndarray,
    cond: tuple[np.ndarray, np.ndarray],
    uncond: tuple[np.ndarray, np.ndarray] | None,
    *,
    solver: str,
    guidance: tuple[float, Sequence[str]] | None,
    reuse: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Euler over t_k = k / K on the straight-line field of each branch's targets, guidance
    uncond + s (cond - uncond) on the chosen outputs, reused evaluations keeping the previous
    outputs; solver none: one run at t = 1 on zeros of the direct model."""

    def field(x_a: np.ndarray, x_v: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        def one(targets: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            if solver == "none":
                return targets[0] + x_a + (t - 1.0), targets[1] + x_v + (t - 1.0)
            return (
                (targets[0] - x_a) / (1.0 - t) + DRIFT * t,
                (targets[1] - x_v) / (1.0 - t) + DRIFT * t,
            )

        c = one(cond)
        if guidance is None or uncond is None:
            return c
        u = one(uncond)
        scale, apply_to = guidance
        v_a = u[0] + scale * (c[0] - u[0]) if "actions" in apply_to else c[0]
        v_v = u[1] + scale * (c[1] - u[1]) if "video" in apply_to else c[1]
        return v_a, v_v

    if solver == "none":
        return field(np.zeros_like(x_a), np.zeros_like(x_v), 1.0)
    v_a = v_v = None
    for k in range(STEPS):
        t = k / STEPS
        if k not in reuse or v_a is None:
            v_a, v_v = field(x_a, x_v, t)
        x_a = x_a + v_a / STEPS
        x_v = x_v + v_v / STEPS
    return x_a, x_v


def chunk_inputs(chunk: int) -> dict[str, Any]:
    """Deterministic inputs of chunk ``chunk``: normalized frames, physical state, tokens, noise."""
    rng = np.random.default_rng(1000 + chunk)
    frames = rng.uniform(-1.0, 1.0, FRAMES_SHAPE).round(4)
    state = np.array([0.3 - 0.1 * chunk, -0.4 + 0.05 * chunk])
    tokens = np.array([[2, 4, 0, 0]] if chunk % 3 else [[3, 4, 2, 0]], dtype=np.int64)
    noise_a = rng.standard_normal(ACTIONS_SHAPE).round(4)
    noise_v = rng.standard_normal(VIDEO_SHAPE).round(4)
    return {
        "frames": frames,
        "state": state,
        "tokens": tokens,
        "noise_a": noise_a,
        "noise_v": noise_v,
    }


def run_case(
    solver: str, guidance: tuple[float, Sequence[str]] | None, reuse: Sequence[int]
) -> list[dict[str, Any]]:
    """Chunks 0..CHUNKS-1 through the reference runtime: the outputs and the state after each."""
    cond_state, uncond_state = StateRef(), StateRef()
    out = []
    for chunk in range(CHUNKS):
        inp = chunk_inputs(chunk)
        latents = encode_reference(inp["frames"])
        state_norm = (inp["state"] - np.array(STATE_MEAN)) / np.array(STATE_STD)
        ca, cv, ck, cvv = context_reference(
            latents,
            state_norm,
            inp["tokens"],
            cond_state.k,
            cond_state.v,
            cond_state.length,
            cond_state.position,
        )
        uncond = None
        if guidance is not None:
            pad = np.full_like(inp["tokens"], PAD_ID)
            ua, uv, uk, uvv = context_reference(
                latents,
                state_norm,
                pad,
                uncond_state.k,
                uncond_state.v,
                uncond_state.length,
                uncond_state.position,
            )
            uncond = (ua, uv)
        x_a, x_v = sample_reference(
            inp["noise_a"],
            inp["noise_v"],
            (ca, cv),
            uncond,
            solver=solver,
            guidance=guidance,
            reuse=reuse,
        )
        actions = x_a * np.array(ACTION_STD) + np.array(ACTION_MEAN)
        cond_state.commit(ck, cvv)
        if guidance is not None:
            uncond_state.commit(uk, uvv)
        out.append(
            {
                "frames": inp["frames"].ravel().tolist(),
                "state": inp["state"].tolist(),
                "tokens": inp["tokens"].ravel().tolist(),
                "noise_actions": inp["noise_a"].ravel().tolist(),
                "noise_video": inp["noise_v"].ravel().tolist(),
                "actions": actions.ravel().tolist(),
                "video_latents": x_v.ravel().tolist(),
                "past_k": cond_state.k.ravel().tolist(),
                "past_v": cond_state.v.ravel().tolist(),
                "length": cond_state.length,
                "position": cond_state.position,
            }
        )
    return out


CASES: Final[list[dict[str, Any]]] = [
    {"name": "state", "solver": "euler", "guidance": None, "reuse": None},
    {"name": "guidance", "solver": "euler", "guidance": (2.5, ["actions", "video"]), "reuse": None},
    {"name": "guidance_video", "solver": "euler", "guidance": (3.0, ["video"]), "reuse": None},
    {"name": "reuse", "solver": "euler", "guidance": None, "reuse": [1, 3]},
    {"name": "none", "solver": "none", "guidance": None, "reuse": None},
]


def fixture() -> dict[str, Any]:
    cases = []
    for case in CASES:
        none = case["solver"] == "none"
        manifest = manifest_text(
            solver=case["solver"],
            steps=1 if none else STEPS,
            guidance=case["guidance"],
            reuse=case["reuse"],
            denoise_file="denoise_direct.onnx" if none else "denoise.onnx",
        )
        cases.append(
            {
                "name": case["name"],
                "manifest": manifest,
                "chunks": run_case(case["solver"], case["guidance"], case["reuse"] or []),
            }
        )
    return {
        "about": "written by tests/wam_testmodel/format2.py (numpy reference); do not edit",
        "max_len": M,
        "block": B,
        "cases": cases,
    }


def write_bundle(out_dir: Path, half: bool) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    files: dict[str, bytes] = {
        name: model.SerializeToString(deterministic=True)
        for name, model in stage_models(half).items()
    }
    model_id = MODEL_ID + ("_f16" if half else "")
    files["wam.yaml"] = manifest_text(model_id=model_id).encode("utf-8")
    files["vocab.txt"] = "".join(f"{w}\n" for w in VOCAB).encode("utf-8")
    for name, data in files.items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


def dumps(fx: dict[str, Any]) -> str:
    return json.dumps(fx, indent=None, separators=(",", ":")) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wam_testmodel.format2", description=__doc__)
    parser.parse_args(argv)
    for kind, path in BUNDLES.items():
        for p in write_bundle(path, half=kind == "f16"):
            print(p)
    FIXTURE.write_text(dumps(fixture()))
    print(FIXTURE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
