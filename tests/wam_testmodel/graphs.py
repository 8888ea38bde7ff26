"""The four ONNX graphs of the test bundle, built node by node with ``onnx.helper``.

Each graph mirrors the numpy function of the same name in ``reference.py`` operation for
operation. All dims are fixed, batch is 1, every tensor is f32 except the i64 ``tokens``. Models
are saved with IR version ``spec.IR_VERSION`` and the default-domain opset ``spec.OPSET``
(ReduceMean takes ``axes`` as an attribute there, ReduceSum/Unsqueeze/Slice take them as inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from numpy.typing import ArrayLike
from onnx import TensorProto, helper, numpy_helper

from . import spec

PRODUCER_NAME = "wam_testmodel"
PRODUCER_VERSION = "1"


class _Builder:
    """Collects the nodes and constant initializers of one graph."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: ArrayLike, dtype: type = np.float32) -> str:
        """Adds an initializer; returns its name."""
        array: np.ndarray = np.asarray(value, dtype=dtype)
        self.initializers.append(numpy_helper.from_array(array, name=name))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any
    ) -> str:
        """Adds a node with one output; returns the output name (generated when not given)."""
        self._count += 1
        out = output if output is not None else f"{self.prefix}_{op_type.lower()}_{self._count}"
        node_name = f"{self.prefix}/{op_type}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        return out

    def model(
        self,
        name: str,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        doc: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            name,
            list(inputs),
            list(outputs),
            initializer=self.initializers,
            doc_string=doc,
        )
        model = helper.make_model(
            graph,
            producer_name=PRODUCER_NAME,
            producer_version=PRODUCER_VERSION,
            opset_imports=[helper.make_opsetid("", spec.OPSET)],
        )
        model.ir_version = spec.IR_VERSION
        model.model_version = 1
        onnx.checker.check_model(model, full_check=True)
        return model


def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _i64(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, list(shape))


def _channel_column(values: Sequence[float], rank: int, axis: int) -> np.ndarray:
    """Per-channel statistics reshaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis] = len(values)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def frame_offsets() -> np.ndarray:
    """[1, 1, F, C, 1, 1]: normalized-pixel offset of predicted frame f, channel ch.

    FRAME_STEP * (f + 1) in pixel units is FRAME_STEP * (f + 1) / std[ch] once normalized.
    """
    f = np.arange(1, spec.F + 1, dtype=np.float64).reshape(1, 1, spec.F, 1, 1, 1)
    std = np.asarray(spec.IMAGE_STD, dtype=np.float64).reshape(1, 1, 1, spec.C, 1, 1)
    return (spec.FRAME_STEP * f / std).astype(np.float32)


def camera_weights() -> np.ndarray:
    """[V, 1]: the action term is BRIGHTNESS_GAIN * (b_0 - b_1) = brightness @ weights."""
    weights = np.zeros((spec.V, 1), dtype=np.float32)
    weights[0, 0] = spec.BRIGHTNESS_GAIN
    weights[1, 0] = -spec.BRIGHTNESS_GAIN
    return weights


def joint_offsets() -> np.ndarray:
    """[1, A]: JOINT_GAIN * j."""
    return (
        (spec.JOINT_GAIN * np.arange(spec.A, dtype=np.float64))
        .astype(np.float32)
        .reshape(1, spec.A)
    )


def step_multipliers() -> np.ndarray:
    """[1, H, 1]: i + 1."""
    return np.arange(1, spec.H + 1, dtype=np.float32).reshape(1, spec.H, 1)


def encode_model() -> onnx.ModelProto:
    """frames [1,V,T,3,32,32] (normalized) -> latents [1,V,T,3,8,8]: POOL x POOL average pool."""
    b = _Builder("encode")
    blocks = b.const(
        "block_shape",
        [1, spec.V, spec.T, spec.C, spec.LATENT_H, spec.POOL, spec.LATENT_W, spec.POOL],
        np.int64,
    )
    x = b.op("Reshape", [spec.ENCODE_IN, blocks])
    b.op("ReduceMean", [x], spec.ENCODE_OUT, axes=[5, 7], keepdims=0)
    return b.model(
        "wam_test_encode",
        [_f32(spec.ENCODE_IN, spec.FRAMES_SHAPE)],
        [_f32(spec.ENCODE_OUT, spec.LATENTS_SHAPE)],
        "latents = 4x4 average pool of the normalized frames",
    )


def context_model(nan_on_unknown_word: bool = False) -> onnx.ModelProto:
    """latents, state, tokens -> action_target [1,H,A], video_target [1,V,F,C,h,w] (normalized).

    ``nan_on_unknown_word`` (a faulty variant, for the node's fault tests): the action target gets
    ``0 * (1 / (1 - is_unk))`` added, where ``is_unk`` is 1 when the first token is ``UNK_ID``.
    An instruction whose first word is not in the vocab then makes every action NaN (0 * inf);
    any other instruction is exact as before (x + 0 == x).
    """
    b = _Builder("context")
    # Newest context frame of every camera: [1, V, 1, C, h, w].
    newest = b.op(
        "Slice",
        [
            spec.CONTEXT_IN_LATENTS,
            b.const("newest_start", [spec.T - 1], np.int64),
            b.const("newest_end", [spec.T], np.int64),
            b.const("newest_axis", [2], np.int64),
        ],
    )
    # Camera brightness b_c in pixel units: un-normalize per channel, mean over C, h, w -> [1, V].
    img_std = b.const("image_std", _channel_column(spec.IMAGE_STD, 6, 3))
    img_mean = b.const("image_mean", _channel_column(spec.IMAGE_MEAN, 6, 3))
    pixels = b.op("Add", [b.op("Mul", [newest, img_std]), img_mean])
    brightness = b.op("ReduceMean", [pixels], axes=[2, 3, 4, 5], keepdims=0)
    camera_term = b.op(
        "MatMul", [brightness, b.const("camera_weights", camera_weights())]
    )  # [1, 1]
    # Sum of the token ids -> [1, 1].
    tokens_f = b.op("Cast", [spec.CONTEXT_IN_TOKENS], to=TensorProto.FLOAT)
    token_sum = b.op("ReduceSum", [tokens_f, b.const("token_axis", [1], np.int64)], keepdims=1)
    token_term = b.op("Mul", [token_sum, b.const("token_gain", spec.TOKEN_GAIN)])
    # Per-step increment (i + 1) * (camera_term + token_term + JOINT_GAIN * j) -> [1, H, A].
    rate = b.op(
        "Add", [b.op("Add", [camera_term, token_term]), b.const("joint_offsets", joint_offsets())]
    )
    axis1 = b.const("axis1", [1], np.int64)
    increment = b.op(
        "Mul", [b.op("Unsqueeze", [rate, axis1]), b.const("step_multipliers", step_multipliers())]
    )
    # Physical joint positions q = state * std + mean -> [1, 1, A].
    q = b.op(
        "Add",
        [
            b.op("Mul", [spec.CONTEXT_IN_STATE, b.const("state_std", [spec.STATE_STD])]),
            b.const("state_mean", [spec.STATE_MEAN]),
        ],
    )
    actions = b.op("Add", [b.op("Unsqueeze", [q, axis1]), increment])
    # Normalize the physical actions: (a - mean) / std.
    normalized = b.op(
        "Div",
        [
            b.op("Sub", [actions, b.const("action_mean", [[spec.ACTION_MEAN]])]),
            b.const("action_std", [[spec.ACTION_STD]]),
        ],
        None if nan_on_unknown_word else spec.CONTEXT_OUT_ACTION,
    )
    if nan_on_unknown_word:
        b.op("Add", [normalized, _nan_if_first_token_unknown(b)], spec.CONTEXT_OUT_ACTION)
    # video_target[c, f] = newest latent of camera c + FRAME_STEP * (f + 1) / std (normalized).
    b.op("Add", [newest, b.const("frame_offsets", frame_offsets())], spec.CONTEXT_OUT_VIDEO)
    return b.model(
        "wam_test_context",
        [
            _f32(spec.CONTEXT_IN_LATENTS, spec.LATENTS_SHAPE),
            _f32(spec.CONTEXT_IN_STATE, spec.STATE_SHAPE),
            _i64(spec.CONTEXT_IN_TOKENS, spec.TOKENS_SHAPE),
        ],
        [
            _f32(spec.CONTEXT_OUT_ACTION, spec.ACTIONS_SHAPE),
            _f32(spec.CONTEXT_OUT_VIDEO, spec.VIDEO_SHAPE),
        ],
        "normalized flow targets of the test function",
    )


def _nan_if_first_token_unknown(b: _Builder) -> str:
    """[1, 1]: 0 * (1 / (1 - is_unk)), is_unk = (tokens[0, 0] == UNK_ID): 0, or NaN when the
    instruction's first word is unknown."""
    first = b.op(
        "Slice",
        [
            spec.CONTEXT_IN_TOKENS,
            b.const("first_token_start", [0], np.int64),
            b.const("first_token_end", [1], np.int64),
            b.const("first_token_axis", [1], np.int64),
        ],
    )  # [1, 1]
    is_unk = b.op(
        "Cast",
        [b.op("Equal", [first, b.const("unk_id", [[spec.UNK_ID]], np.int64)])],
        to=TensorProto.FLOAT,
    )
    one = b.const("nan_one", [[1.0]])
    inverse = b.op("Div", [one, b.op("Sub", [one, is_unk])])  # 1, or +inf
    return b.op("Mul", [b.const("nan_zero", [[0.0]]), inverse])


def denoise_model() -> onnx.ModelProto:
    """velocity = (target - x) / (1 - time) for the actions and the video latents."""
    b = _Builder("denoise")
    remaining = b.op("Sub", [b.const("one", [1.0]), spec.DENOISE_IN_TIME])  # [1]
    for x, target, out in (
        (spec.DENOISE_IN_ACTIONS, spec.CONTEXT_OUT_ACTION, spec.DENOISE_OUT_ACTIONS),
        (spec.DENOISE_IN_VIDEO, spec.CONTEXT_OUT_VIDEO, spec.DENOISE_OUT_VIDEO),
    ):
        b.op("Div", [b.op("Sub", [target, x]), remaining], out)
    return b.model(
        "wam_test_denoise",
        [
            _f32(spec.DENOISE_IN_ACTIONS, spec.ACTIONS_SHAPE),
            _f32(spec.DENOISE_IN_VIDEO, spec.VIDEO_SHAPE),
            _f32(spec.DENOISE_IN_TIME, spec.TIME_SHAPE),
            _f32(spec.CONTEXT_OUT_ACTION, spec.ACTIONS_SHAPE),
            _f32(spec.CONTEXT_OUT_VIDEO, spec.VIDEO_SHAPE),
        ],
        [
            _f32(spec.DENOISE_OUT_ACTIONS, spec.ACTIONS_SHAPE),
            _f32(spec.DENOISE_OUT_VIDEO, spec.VIDEO_SHAPE),
        ],
        "straight-line flow: Euler from t=0 in K steps lands exactly on the target",
    )


def decode_model() -> onnx.ModelProto:
    """video_latents [1,V,F,3,8,8] -> predicted_frames [1,V,F,3,32,32]: nearest x4, pixels."""
    b = _Builder("decode")
    lh, lw, p = spec.LATENT_H, spec.LATENT_W, spec.POOL
    x = b.op(
        "Reshape",
        [
            spec.DECODE_IN,
            b.const("point_shape", [1, spec.V, spec.F, spec.C, lh, 1, lw, 1], np.int64),
        ],
    )
    x = b.op(
        "Expand", [x, b.const("block_shape", [1, spec.V, spec.F, spec.C, lh, p, lw, p], np.int64)]
    )
    x = b.op("Reshape", [x, b.const("frame_shape", spec.PREDICTED_FRAMES_SHAPE, np.int64)])
    x = b.op("Mul", [x, b.const("image_std", _channel_column(spec.IMAGE_STD, 6, 3))])
    b.op(
        "Add", [x, b.const("image_mean", _channel_column(spec.IMAGE_MEAN, 6, 3))], spec.DECODE_OUT
    )
    return b.model(
        "wam_test_decode",
        [_f32(spec.DECODE_IN, spec.VIDEO_SHAPE)],
        [_f32(spec.DECODE_OUT, spec.PREDICTED_FRAMES_SHAPE)],
        "nearest x4 upsample of the latents, un-normalized to RGB in [0, 1]",
    )


def all_models(nan_on_unknown_word: bool = False) -> dict[str, onnx.ModelProto]:
    """Stage name -> model, in pipeline order (``nan_on_unknown_word``: see `context_model`)."""
    return {
        "encode": encode_model(),
        "context": context_model(nan_on_unknown_word),
        "denoise": denoise_model(),
        "decode": decode_model(),
    }
