"""What a correct node publishes for given inputs, from the test bundle's numpy reference, and
checks of received messages against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory

from wam_testmodel import reference

from .images import U8, rgb_of, to_unit

__all__ = [
    "ACTION_DT",
    "HORIZON",
    "VIDEO_DT",
    "BUNDLE_JOINTS",
    "Expected",
    "expected_for",
    "trajectory_arrays",
    "trajectory_error",
    "predicted_u8",
]

ACTION_DT = 0.1
HORIZON = 8
VIDEO_FRAMES = 2
VIDEO_DT = HORIZON * ACTION_DT / VIDEO_FRAMES
BUNDLE_JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Expected:
    """Expected outputs for a constant observation."""

    q: F64  # [A] measured positions, bundle order
    actions: F64  # [H, A]
    velocities: F64  # [H, A] central differences, q before step 0, 0 at the end
    frames: NDArray[np.int64]  # [V, F, 32, 32, 3] rgb8 predicted frames
    token_ids: tuple[int, ...]


def _velocities(q: F64, actions: F64) -> F64:
    padded = np.concatenate([q[None, :], actions], axis=0)  # index k+1 is step k
    v = np.zeros_like(actions)
    for i in range(actions.shape[0] - 1):
        v[i] = (padded[i + 2] - padded[i]) / (2.0 * ACTION_DT)
    return v


def expected_for(
    q: Sequence[float],
    newest: Sequence[U8],
    instruction: str,
    lower: Sequence[float] | None = None,
    upper: Sequence[float] | None = None,
) -> Expected:
    """``newest``: per camera (bundle order) the 32x32 [H, W, 3] u8 frame the model sees (or
    [H, W] gray). With limits, positions are clamped and velocities follow the clamped chunk."""
    q64 = np.asarray(q, dtype=np.float64)
    frames = np.stack([to_unit(f) for f in newest])  # [V, 3, 32, 32]
    ids = tuple(int(t) for t in reference.tokenize(instruction))
    actions = reference.expected_actions(q64, frames, ids)
    if lower is not None and upper is not None:
        actions = np.clip(actions, np.asarray(lower), np.asarray(upper))
    predicted = reference.expected_predicted_frames(frames)  # [V, F, 3, 32, 32]
    u8 = np.round(np.clip(predicted, 0.0, 1.0) * 255.0).astype(np.int64)
    return Expected(
        q=q64,
        actions=actions,
        velocities=_velocities(q64, actions),
        frames=np.transpose(u8, (0, 1, 3, 4, 2)),
        token_ids=ids,
    )


def trajectory_arrays(msg: JointTrajectory) -> tuple[list[int], F64, F64]:
    """(step index of every point, positions [P, A], velocities [P, A]); the step of a point is
    round(time_from_start / dt) - 1."""
    steps: list[int] = []
    pos: list[list[float]] = []
    vel: list[list[float]] = []
    for p in msg.points:
        t = p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
        steps.append(int(round(t / ACTION_DT)) - 1)
        pos.append(list(p.positions))
        vel.append(list(p.velocities))
    return steps, np.asarray(pos, dtype=np.float64), np.asarray(vel, dtype=np.float64)


def trajectory_error(msg: JointTrajectory, exp: Expected) -> float:
    """Largest |position - expected| over the published points and |velocity - expected| over all
    but the first (inf when the message does not have the expected shape). The first point's
    velocity is not the chunk's alone: it is the central difference from where the command stream
    was when the chunk was published (the node's plan anchor)."""
    if not msg.points:
        return float("inf")
    steps, pos, vel = trajectory_arrays(msg)
    a = exp.actions.shape[1]
    if pos.shape != (len(steps), a) or vel.shape != (len(steps), a):
        return float("inf")
    if min(steps) < 0 or max(steps) >= exp.actions.shape[0]:
        return float("inf")
    return float(
        max(
            np.max(np.abs(pos - exp.actions[steps])),
            np.max(np.abs(vel[1:] - exp.velocities[steps][1:]), initial=0.0),
        )
    )


def predicted_u8(msg: Image) -> NDArray[np.int64]:
    return rgb_of(msg).astype(np.int64)
