"""Numpy reference of the test bundle.

Two levels:

* ``expected_actions`` / ``expected_predicted_frames``: the known function in physical units,
  computed in float64 straight from its definition. These are the values a correct node must
  publish.
* ``encode`` / ``context`` / ``denoise`` / ``decode`` / ``euler_sample`` /
  ``run_bundle_reference``: the four stages and the sampler in float32, operation for operation as
  the ONNX graphs, plus the node-side normalization around them.

The function (q = raw joint positions, images in pixel units [0, 1]):

* ``b_c`` = mean over the 3 channels and all pixels of camera c's newest context frame (index T-1);
* ``s`` = sum of the L token ids;
* ``action[i][j] = q[j] + (i+1) * (0.02*(b_0 - b_1) + 0.001*s + 0.001*j)`` for i < H, j < A;
* predicted frame f of camera c, pixel (ch, y, x) = ``P_c[ch, y//4, x//4] + 0.05*(f+1)``, where
  ``P_c`` is the 4x4 average pool of camera c's newest context frame.

The sampler cannot change the result: the denoise velocity ``(target - x) / (1 - t)`` makes every
Euler run from t = 0 end on the target, whatever the noise and the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from . import graphs, spec
from .tokenizer import tokenize

__all__ = [
    "tokenize",
    "expected_actions",
    "expected_predicted_frames",
    "normalize_frames",
    "normalize_state",
    "denormalize_actions",
    "encode",
    "context",
    "denoise",
    "decode",
    "euler_sample",
    "run_bundle_reference",
]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
DenoiseFn = Callable[[F32, F32, F32, F32, F32], tuple[F32, F32]]


def _pool(pixels: NDArray[np.floating]) -> F64:
    """[..., 3, 32, 32] -> [..., 3, 8, 8]: POOL x POOL average pool, in float64."""
    x = np.asarray(pixels, dtype=np.float64)
    lead = x.shape[:-2]
    x = x.reshape(*lead, spec.LATENT_H, spec.POOL, spec.LATENT_W, spec.POOL)
    pooled: F64 = x.mean(axis=(-3, -1))
    return pooled


def _check_newest(newest_frames: NDArray[np.floating]) -> None:
    expected = (spec.V, 3, spec.HEIGHT, spec.WIDTH)
    if newest_frames.shape != expected:
        raise ValueError(f"newest_frames: shape {newest_frames.shape}, expected {expected}")


# ------------------------------------------------------------------------------------------------
# The function, physical units, float64.


def expected_actions(
    q: NDArray[np.floating], newest_frames: NDArray[np.floating], token_ids: Sequence[int]
) -> F64:
    """[H, A] absolute joint positions the node must publish.

    ``q``: [A] raw joint positions; ``newest_frames``: [V, 3, 32, 32] newest context frame of
    every camera, pixels in [0, 1]; ``token_ids``: the L ids fed to the model.
    """
    q64 = np.asarray(q, dtype=np.float64).reshape(spec.A)
    _check_newest(newest_frames)
    b = np.asarray(newest_frames, dtype=np.float64).mean(axis=(1, 2, 3))  # [V]
    s = float(sum(int(t) for t in token_ids))
    i = np.arange(1, spec.H + 1, dtype=np.float64)[:, None]
    j = np.arange(spec.A, dtype=np.float64)[None, :]
    rate = spec.BRIGHTNESS_GAIN * (b[0] - b[1]) + spec.TOKEN_GAIN * s + spec.JOINT_GAIN * j
    actions: F64 = q64[None, :] + i * rate
    return actions


def expected_predicted_frames(newest_frames: NDArray[np.floating]) -> F64:
    """[V, F, 3, 32, 32] predicted frames, pixel units."""
    _check_newest(newest_frames)
    pooled = _pool(newest_frames)  # [V, 3, 8, 8]
    up = pooled.repeat(spec.POOL, axis=-2).repeat(spec.POOL, axis=-1)  # [V, 3, 32, 32]
    f = spec.FRAME_STEP * np.arange(1, spec.F + 1, dtype=np.float64).reshape(1, spec.F, 1, 1, 1)
    return up[:, None] + f


# ------------------------------------------------------------------------------------------------
# Node-side normalization (float32).


def normalize_frames(pixels: NDArray[np.floating]) -> F32:
    """[..., 3, h, w] pixels -> (p - mean) / std per channel."""
    mean = np.asarray(spec.IMAGE_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.IMAGE_STD, dtype=np.float32).reshape(3, 1, 1)
    return ((np.asarray(pixels, dtype=np.float32) - mean) / std).astype(np.float32)


def normalize_state(q: NDArray[np.floating]) -> F32:
    """[S] raw joint positions -> [1, S] model state."""
    mean = np.asarray(spec.STATE_MEAN, dtype=np.float32)
    std = np.asarray(spec.STATE_STD, dtype=np.float32)
    x = (np.asarray(q, dtype=np.float32).reshape(spec.S) - mean) / std
    return x.reshape(spec.STATE_SHAPE).astype(np.float32)


def denormalize_actions(actions: NDArray[np.floating]) -> F32:
    """[1, H, A] or [H, A] model actions -> [H, A] joint positions."""
    mean = np.asarray(spec.ACTION_MEAN, dtype=np.float32)
    std = np.asarray(spec.ACTION_STD, dtype=np.float32)
    a = np.asarray(actions, dtype=np.float32).reshape(spec.H, spec.A)
    return (a * std + mean).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# The four stages (float32, mirroring graphs.py).


def encode(frames: F32) -> F32:
    """frames [1, V, T, 3, 32, 32] normalized -> latents [1, V, T, 3, 8, 8]."""
    x = np.asarray(frames, dtype=np.float32).reshape(
        1, spec.V, spec.T, spec.C, spec.LATENT_H, spec.POOL, spec.LATENT_W, spec.POOL
    )
    latents: F32 = x.mean(axis=(5, 7), dtype=np.float32)
    return latents


def context(
    latents: F32, state: F32, tokens: NDArray[np.int64], nan_on_unknown_word: bool = False
) -> tuple[F32, F32]:
    """-> (action_target [1, H, A], video_target [1, V, F, C, h, w]), both normalized.

    ``nan_on_unknown_word``: the faulty variant's graph (every action NaN when the first token is
    ``UNK_ID``, unchanged otherwise)."""
    newest = np.asarray(latents, dtype=np.float32)[:, :, spec.T - 1 : spec.T]  # [1, V, 1, C, h, w]
    img_std = np.asarray(spec.IMAGE_STD, dtype=np.float32).reshape(1, 1, 1, spec.C, 1, 1)
    img_mean = np.asarray(spec.IMAGE_MEAN, dtype=np.float32).reshape(1, 1, 1, spec.C, 1, 1)
    brightness = (newest * img_std + img_mean).mean(axis=(2, 3, 4, 5), dtype=np.float32)  # [1, V]
    camera_term = brightness @ graphs.camera_weights()  # [1, 1]
    token_sum = np.asarray(tokens, dtype=np.int64).astype(np.float32).sum(axis=1, keepdims=True)
    token_term = token_sum * np.float32(spec.TOKEN_GAIN)
    rate = camera_term + token_term + graphs.joint_offsets()  # [1, A]
    increment = rate[:, None, :] * graphs.step_multipliers()  # [1, H, A]
    state_std = np.asarray([spec.STATE_STD], dtype=np.float32)
    state_mean = np.asarray([spec.STATE_MEAN], dtype=np.float32)
    q = np.asarray(state, dtype=np.float32) * state_std + state_mean  # [1, A]
    actions = q[:, None, :] + increment
    action_mean = np.asarray([[spec.ACTION_MEAN]], dtype=np.float32)
    action_std = np.asarray([[spec.ACTION_STD]], dtype=np.float32)
    action_target = ((actions - action_mean) / action_std).astype(np.float32)
    if nan_on_unknown_word:
        is_unk = np.float32(np.asarray(tokens).reshape(-1)[0] == spec.UNK_ID)
        with np.errstate(divide="ignore", invalid="ignore"):
            nan_term = np.float32(0.0) * (np.float32(1.0) / (np.float32(1.0) - is_unk))
        action_target = (action_target + nan_term).astype(np.float32)
    video_target = (newest + graphs.frame_offsets()).astype(np.float32)
    return action_target, video_target


def denoise(
    noisy_actions: F32, noisy_video: F32, time: F32, action_target: F32, video_target: F32
) -> tuple[F32, F32]:
    """-> (action_velocity, video_velocity) = (target - x) / (1 - time)."""
    remaining = np.float32(1.0) - np.asarray(time, dtype=np.float32).reshape(1)
    return (
        ((action_target - noisy_actions) / remaining).astype(np.float32),
        ((video_target - noisy_video) / remaining).astype(np.float32),
    )


def decode(video_latents: F32) -> F32:
    """video_latents [1, V, F, C, h, w] -> predicted_frames [1, V, F, 3, 32, 32] in pixel units."""
    x = np.asarray(video_latents, dtype=np.float32)
    up = x.repeat(spec.POOL, axis=-2).repeat(spec.POOL, axis=-1)
    img_std = np.asarray(spec.IMAGE_STD, dtype=np.float32).reshape(1, 1, 1, spec.C, 1, 1)
    img_mean = np.asarray(spec.IMAGE_MEAN, dtype=np.float32).reshape(1, 1, 1, spec.C, 1, 1)
    return (up * img_std + img_mean).astype(np.float32)


def euler_sample(
    denoise_fn: DenoiseFn,
    action_target: F32,
    video_target: F32,
    noise_actions: F32,
    noise_video: F32,
    steps: int = spec.SAMPLER_STEPS,
) -> tuple[F32, F32]:
    """Flow-matching Euler sampler of docs/bundle_format.md: t_k = k/K, x += (1/K) * v.

    ``denoise_fn(x_actions, x_video, time[1], action_target, video_target)`` may be this module's
    ``denoise`` or an ONNX Runtime session wrapper.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    xa = np.asarray(noise_actions, dtype=np.float32).reshape(spec.ACTIONS_SHAPE).copy()
    xv = np.asarray(noise_video, dtype=np.float32).reshape(spec.VIDEO_SHAPE).copy()
    dt = np.float32(1.0 / steps)
    for k in range(steps):
        t = np.asarray([k / steps], dtype=np.float32)
        va, vv = denoise_fn(xa, xv, t, action_target, video_target)
        xa = (xa + dt * va).astype(np.float32)
        xv = (xv + dt * vv).astype(np.float32)
    return xa, xv


def run_bundle_reference(
    q: NDArray[np.floating],
    frames: NDArray[np.floating],
    token_ids: Sequence[int],
    noise_actions: NDArray[np.floating],
    noise_video: NDArray[np.floating],
    steps: int = spec.SAMPLER_STEPS,
) -> tuple[F32, F32]:
    """Whole chunk path in numpy float32.

    Normalize, encode, context, K Euler steps, de-normalize, decode. ``q``: [S] raw joint
    positions; ``frames``: [V, T, 3, 32, 32] context frames (oldest first), pixels in [0, 1];
    ``token_ids``: L ids; ``noise_*``: initial noise, shaped like the denoise inputs (batch axis
    optional). Returns (actions [H, A] joint positions, predicted_frames [V, F, 3, 32, 32]
    pixels).
    """
    pixels = np.asarray(frames, dtype=np.float32).reshape(spec.FRAMES_SHAPE)
    latents = encode(normalize_frames(pixels))
    tokens = np.asarray(list(token_ids), dtype=np.int64).reshape(spec.TOKENS_SHAPE)
    action_target, video_target = context(latents, normalize_state(q), tokens)
    xa, xv = euler_sample(
        denoise,
        action_target,
        video_target,
        np.asarray(noise_actions, dtype=np.float32),
        np.asarray(noise_video, dtype=np.float32),
        steps,
    )
    return denormalize_actions(xa), decode(xv)[0]
