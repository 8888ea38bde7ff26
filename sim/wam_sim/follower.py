"""A pure-Python trajectory follower with the rules of ros2_control's joint_trajectory_controller.

- A trajectory whose stamp is zero starts when it arrives, otherwise at its stamp;
  ``time_from_start`` counts from that start and must increase strictly.
- A new trajectory replaces the active one: points whose time is already past are skipped and the
  motion continues from the current desired state to the first future point. A trajectory whose
  last point is already past is rejected (as the controller does).
- Positions only: linear interpolation. Positions and velocities: cubic Hermite.
- Joints are matched by name in any order; every joint must be named; unknown names are rejected.
- After the last point its position is held; before any command the start pose is held.
- Direct position commands (forward_command_controller style) replace any trajectory.

Every ``tick`` records the desired state, from which idle time and velocity jumps are measured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .scene import JOINT_NAMES

# Modes of a tick.
HOLD_START = "start"  # no command yet
ACTIVE = "active"  # following a trajectory
ENDED = "ended"  # the last trajectory has ended, nothing newer arrived
DIRECT = "direct"  # holding a direct position command


@dataclass
class _Trajectory:
    times: np.ndarray  # (K+1,) absolute times, [anchor, points...]
    pos: np.ndarray  # (K+1, n)
    vel: np.ndarray | None  # (K+1, n) for cubic


@dataclass
class TickRecord:
    """The desired state at one control tick."""

    t: float
    position: np.ndarray
    velocity: np.ndarray
    mode: str


class TrajectoryFollower:
    """Desired joint state over time from trajectories and direct commands."""

    def __init__(
        self,
        start: Sequence[float] | np.ndarray,
        joint_names: Sequence[str] = JOINT_NAMES,
        history: int = 200_000,
    ) -> None:
        self.joint_names = list(joint_names)
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self.rejected = 0
        self.accepted = 0
        self.last_reject_reason = ""
        self.history: deque[TickRecord] = deque(maxlen=history)
        self.reset(start)

    def reset(self, start: Sequence[float] | np.ndarray) -> None:
        """Forgets every command and the measurements; holds ``start``."""
        self._pos = np.asarray(start, dtype=np.float64).reshape(len(self.joint_names)).copy()
        self._vel = np.zeros_like(self._pos)
        self._traj: _Trajectory | None = None
        self._mode = HOLD_START
        self.reset_metrics()

    def reset_metrics(self) -> None:
        """Clears the recorded ticks and the accumulated measurements."""
        self.history.clear()
        self._idle = 0.0
        self._max_jump = 0.0
        self._last_tick: TickRecord | None = None

    # -- commands ------------------------------------------------------------------------------
    def receive_trajectory(
        self,
        joint_names: Sequence[str],
        stamp: float,
        time_from_start: Sequence[float],
        positions: Sequence[Sequence[float]],
        velocities: Sequence[Sequence[float]] | None,
        now: float,
    ) -> bool:
        """Takes a trajectory arriving at ``now`` (stamp 0.0: start now); False if rejected.

        ``velocities`` is None, or one entry per point (an empty entry: that point has none; the
        trajectory is cubic only when every point has velocities).
        """
        reason = self._check(joint_names, time_from_start, positions)
        if reason:
            return self._reject(reason)
        order = [self._index[n] for n in joint_names]
        n = len(self.joint_names)
        k = len(time_from_start)
        start = now if stamp == 0.0 else float(stamp)
        times = start + np.asarray(time_from_start, dtype=np.float64)
        pos = np.empty((k, n))
        pos[:, order] = np.asarray(positions, dtype=np.float64)
        vel: np.ndarray | None = None
        if velocities is not None and len(velocities) == k and all(len(v) for v in velocities):
            if any(len(v) != n for v in velocities):
                return self._reject("velocities do not match the joint names")
            vel = np.empty((k, n))
            vel[:, order] = np.asarray(velocities, dtype=np.float64)
            if not np.all(np.isfinite(vel)):
                return self._reject("non-finite velocity")
        if times[-1] < now:
            return self._reject("trajectory ends in the past")
        # Sample the current desired state, then skip points already due.
        cur_pos, cur_vel = self.sample(now)
        keep = times >= now
        times, pos = times[keep], pos[keep]
        vel = vel[keep] if vel is not None else None
        if len(times) == 0:  # ends exactly now: jump to the hold of its last point
            times, pos = np.array([now]), np.asarray(positions, dtype=np.float64)[-1:][:, order]
        anchor_t = min(now, times[0])
        self._traj = _Trajectory(
            times=np.concatenate([[anchor_t], times]),
            pos=np.vstack([cur_pos, pos]),
            vel=np.vstack([cur_vel, vel]) if vel is not None else None,
        )
        self._mode = ACTIVE
        self.accepted += 1
        return True

    def command_positions(self, values: Sequence[float]) -> bool:
        """A direct position command (JOINT_NAMES order); replaces any trajectory."""
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (len(self.joint_names),) or not np.all(np.isfinite(q)):
            return self._reject(f"direct command needs {len(self.joint_names)} finite values")
        self._traj = None
        self._pos, self._vel = q.copy(), np.zeros_like(q)
        self._mode = DIRECT
        self.accepted += 1
        return True

    def _check(
        self,
        joint_names: Sequence[str],
        time_from_start: Sequence[float],
        positions: Sequence[Sequence[float]],
    ) -> str:
        unknown = [n for n in joint_names if n not in self._index]
        if unknown:
            return f"unknown joints {unknown}"
        if len(set(joint_names)) != len(joint_names):
            return "duplicate joint names"
        missing = [n for n in self.joint_names if n not in joint_names]
        if missing:
            return f"missing joints {missing}"
        if len(time_from_start) == 0:
            return "no points"
        if len(positions) != len(time_from_start):
            return "points without positions"
        tfs = np.asarray(time_from_start, dtype=np.float64)
        if not np.all(np.isfinite(tfs)) or np.any(np.diff(tfs) <= 0.0) or tfs[0] < 0.0:
            return "time_from_start must increase strictly from >= 0"
        if any(len(p) != len(joint_names) for p in positions):
            return "positions do not match the joint names"
        if not np.all(np.isfinite(np.asarray(positions, dtype=np.float64))):
            return "non-finite position"
        return ""

    def _reject(self, reason: str) -> bool:
        self.rejected += 1
        self.last_reject_reason = reason
        return False

    # -- sampling ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """What the follower does now: start, active, ended or direct (as of the last sample)."""
        return self._mode

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Desired (position, velocity) at ``now``; updates the mode, records nothing."""
        tr = self._traj
        if tr is None:
            return self._pos.copy(), np.zeros_like(self._pos)
        if now >= tr.times[-1]:
            self._pos, self._vel = tr.pos[-1].copy(), np.zeros_like(self._pos)
            self._traj = None
            self._mode = ENDED
            return self._pos.copy(), self._vel.copy()
        i = int(np.searchsorted(tr.times, now, side="right")) - 1
        i = max(0, min(i, len(tr.times) - 2))
        t0, t1 = tr.times[i], tr.times[i + 1]
        h = t1 - t0
        s = 0.0 if h <= 0.0 else (max(now, t0) - t0) / h
        p0, p1 = tr.pos[i], tr.pos[i + 1]
        if tr.vel is None:
            pos = p0 + s * (p1 - p0)
            vel = (p1 - p0) / h if now >= t0 and h > 0.0 else np.zeros_like(p0)
        else:
            v0, v1 = tr.vel[i], tr.vel[i + 1]
            s2, s3 = s * s, s * s * s
            pos = (
                (2 * s3 - 3 * s2 + 1) * p0
                + (s3 - 2 * s2 + s) * h * v0
                + (-2 * s3 + 3 * s2) * p1
                + (s3 - s2) * h * v1
            )
            vel = (
                (6 * s2 - 6 * s) * p0
                + (3 * s2 - 4 * s + 1) * h * v0
                + (-6 * s2 + 6 * s) * p1
                + (3 * s2 - 2 * s) * h * v1
            ) / h
        self._pos, self._vel = pos, vel
        return pos.copy(), vel.copy()

    def tick(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Samples at a control tick and records the desired state for the measurements."""
        pos, vel = self.sample(now)
        rec = TickRecord(now, pos, vel, self._mode)
        last = self._last_tick
        if last is not None and now > last.t:
            if rec.mode == ENDED and last.mode == ENDED:
                self._idle += now - last.t
            self._max_jump = max(self._max_jump, float(np.max(np.abs(vel - last.velocity))))
        self._last_tick = rec
        self.history.append(rec)
        return pos, vel

    # -- measurements --------------------------------------------------------------------------
    @property
    def idle_time(self) -> float:
        """Seconds between ticks that both found the last trajectory ended and nothing newer."""
        return self._idle

    @property
    def max_velocity_jump(self) -> float:
        """Largest change of desired velocity (any joint) between consecutive ticks."""
        return self._max_jump

    def idle_time_between(self, t0: float, t1: float) -> float:
        """Idle time among the recorded ticks in [t0, t1]."""
        idle = 0.0
        prev: TickRecord | None = None
        for rec in self.history:
            if (
                prev is not None
                and t0 <= prev.t
                and rec.t <= t1
                and rec.mode == ENDED
                and prev.mode == ENDED
            ):
                idle += rec.t - prev.t
            prev = rec
        return idle

    def velocity_jumps(self) -> np.ndarray:
        """Per recorded tick after the first: the largest change of desired velocity (any joint)."""
        recs = list(self.history)
        if len(recs) < 2:
            return np.zeros(0)
        v = np.array([r.velocity for r in recs])
        return np.max(np.abs(np.diff(v, axis=0)), axis=1)
