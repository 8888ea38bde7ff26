"""Pure helpers of the evaluation: summaries, follower and boundary measurements, tables.

Nothing here needs ROS; the unit tests in tests/test_closed_loop.py exercise these directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TrajectoryKnots",
    "boundary_velocity_jumps",
    "follower_metrics",
    "hermite_velocity",
    "markdown_table",
    "percentiles",
    "replace_between_markers",
    "wilson_interval",
]


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95)) -> dict[str, float | None]:
    """``{"p50": .., "p95": .., "max": .., "n": ..}`` of ``values`` (None when empty)."""
    arr = np.asarray(list(values), dtype=np.float64)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q:g}"] = float(np.percentile(arr, q)) if arr.size else None
    out["max"] = float(arr.max()) if arr.size else None
    out["n"] = float(arr.size)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (0, 1 for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def follower_metrics(
    stamps: Sequence[float] | np.ndarray,
    velocities: np.ndarray,
    positions: np.ndarray,
    t0: float,
    t1: float,
    max_gap_s: float = 0.02,
) -> dict[str, float]:
    """Measurements of the follower's desired state (``/wam_sim/desired_state``) in [t0, t1].

    - ``max_velocity_jump``: largest change of desired velocity (any joint) between consecutive
      samples that are at most ``max_gap_s`` apart (a sample lost in transport would otherwise
      look like a jump).
    - ``idle_s``: time between consecutive samples that both hold still (velocity exactly zero,
      position unchanged: the follower has nothing to follow), counted only after the first
      motion in the window, so that the wait for the first chunk is not counted.
    - ``samples`` and ``gaps`` (pairs skipped for ``max_gap_s``).
    """
    t = np.asarray(stamps, dtype=np.float64)
    v = np.asarray(velocities, dtype=np.float64)
    p = np.asarray(positions, dtype=np.float64)
    keep = (t >= t0) & (t <= t1)
    t, v, p = t[keep], v[keep], p[keep]
    out = {"max_velocity_jump": 0.0, "idle_s": 0.0, "samples": float(t.size), "gaps": 0.0}
    if t.size < 2:
        return out
    order = np.argsort(t, kind="stable")
    t, v, p = t[order], v[order], p[order]
    dt = np.diff(t)
    close = (dt > 0) & (dt <= max_gap_s)
    dv = np.max(np.abs(np.diff(v, axis=0)), axis=1)
    if np.any(close):
        out["max_velocity_jump"] = float(dv[close].max())
    out["gaps"] = float(np.sum(dt > max_gap_s))
    still = np.all(v == 0.0, axis=1)
    moving = np.flatnonzero(~still)
    if moving.size:
        same = np.all(np.abs(np.diff(p, axis=0)) <= 1e-12, axis=1)
        idle_pair = still[:-1] & still[1:] & same
        idle_pair[: moving[0]] = False
        out["idle_s"] = float(dt[idle_pair].sum())
    return out


@dataclass
class TrajectoryKnots:
    """A JointTrajectory as absolute knot times, positions and velocities ([K], [K, J], [K, J])."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    @staticmethod
    def from_points(
        stamp: float,
        time_from_start: Sequence[float],
        positions: Sequence[Sequence[float]],
        velocities: Sequence[Sequence[float]],
    ) -> TrajectoryKnots:
        """From a trajectory's header stamp and its points."""
        return TrajectoryKnots(
            times=stamp + np.asarray(time_from_start, dtype=np.float64),
            positions=np.asarray(positions, dtype=np.float64),
            velocities=np.asarray(velocities, dtype=np.float64),
        )


def hermite_velocity(traj: TrajectoryKnots, t: float) -> np.ndarray:
    """Velocity of the cubic Hermite spline through the knots at ``t`` (zero after the last
    knot: the controller holds it; the first knot's velocity before it)."""
    times, q, v = traj.times, traj.positions, traj.velocities
    if t >= times[-1]:
        return np.zeros(q.shape[1])
    if t <= times[0]:
        first: np.ndarray = v[0].copy()
        return first
    i = int(np.searchsorted(times, t, side="right")) - 1
    h = times[i + 1] - times[i]
    s = (t - times[i]) / h
    s2 = s * s
    out: np.ndarray = (
        (6 * s2 - 6 * s) * q[i]
        + (3 * s2 - 4 * s + 1) * h * v[i]
        + (-6 * s2 + 6 * s) * q[i + 1]
        + (3 * s2 - 2 * s) * h * v[i + 1]
    ) / h
    return out


def boundary_velocity_jumps(trajectories: Sequence[TrajectoryKnots]) -> list[float]:
    """Per boundary (each trajectory after the first): the largest difference over joints between
    the new trajectory's velocity at its first point and the velocity the previous one commanded
    for that time (the node's ``max_boundary_velocity_jump``, measured from the messages)."""
    out: list[float] = []
    for prev, new in itertools.pairwise(trajectories):
        if new.times.size == 0 or prev.times.size == 0:
            continue
        old_v = hermite_velocity(prev, float(new.times[0]))
        out.append(float(np.max(np.abs(new.velocities[0] - old_v))))
    return out


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub markdown table; floats with ``digits`` decimals, None as a dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


def replace_between_markers(
    text: str,
    begin: str,
    end: str,
    body: str,
    heading: str | None = None,
    before: str | None = None,
) -> str:
    """``text`` with what lies between the ``begin`` and ``end`` marker lines replaced by
    ``body``. Without the markers they are added (after ``heading`` when given): before the
    first line that starts with ``before`` when there is one, else at the end. Raises ValueError
    when only one marker is there, or they are out of order."""
    i, j = text.find(begin), text.find(end)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if i < 0 and j < 0 and before:
        lines = text.splitlines(keepends=True)
        for k, line in enumerate(lines):
            if line.startswith(before):
                new = ([heading, "", block] if heading else [block]) + ["", ""]
                return "".join(lines[:k]) + "\n".join(new) + "".join(lines[k:])
    if i < 0 and j < 0:
        prefix = text.rstrip("\n")
        parts = [prefix] if prefix else []
        if heading:
            parts.append(heading)
        parts.append(block)
        return "\n\n".join(parts) + "\n"
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"markers {begin!r} / {end!r} are incomplete or out of order")
    return text[:i] + block + text[j + len(end) :]


def summarize_rates(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Success count, rate and Wilson interval of episode records with a ``success`` field."""
    n = len(records)
    k = sum(1 for r in records if r.get("success"))
    lo, hi = wilson_interval(k, n)
    return {"episodes": n, "successes": k, "success_rate": k / n if n else None, "ci95": [lo, hi]}
