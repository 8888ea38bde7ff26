"""The trajectory follower honours the joint_trajectory_controller's rules."""

from __future__ import annotations

import numpy as np
import pytest

from wam_sim import JOINT_NAMES, TrajectoryFollower
from wam_sim.follower import ACTIVE, DIRECT, ENDED, HOLD_START

Q0 = np.array([0.1, -0.2, 0.3, -1.0, 0.0, 1.5, 0.02])


def pts(*rows: float) -> list[list[float]]:
    """Points whose every joint takes the given value."""
    return [[v] * 7 for v in rows]


@pytest.fixture
def f() -> TrajectoryFollower:
    return TrajectoryFollower(Q0)


def test_holds_start_pose(f: TrajectoryFollower) -> None:
    for t in (0.0, 1.0, 5.0):
        p, v = f.tick(t)
        np.testing.assert_array_equal(p, Q0)
        assert not v.any()
    assert f.mode == HOLD_START and f.idle_time == 0.0


def test_zero_stamp_starts_on_arrival(f: TrajectoryFollower) -> None:
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0], pts(1.0), None, now=10.0)
    np.testing.assert_allclose(f.sample(10.0)[0], Q0)
    np.testing.assert_allclose(f.sample(10.5)[0], (Q0 + 1.0) / 2)
    np.testing.assert_allclose(f.sample(10.5)[1], 1.0 - Q0)
    np.testing.assert_allclose(f.sample(11.0)[0], 1.0)


def test_future_stamp(f: TrajectoryFollower) -> None:
    # Starts at its stamp: the first point is reached at stamp + time_from_start.
    assert f.receive_trajectory(JOINT_NAMES, 12.0, [1.0, 2.0], pts(1.0, 2.0), None, now=10.0)
    np.testing.assert_allclose(f.sample(10.0)[0], Q0)
    np.testing.assert_allclose(f.sample(11.5)[0], Q0 + (1.0 - Q0) * 1.5 / 3.0)
    np.testing.assert_allclose(f.sample(13.0)[0], 1.0)
    np.testing.assert_allclose(f.sample(13.5)[0], 1.5)
    np.testing.assert_allclose(f.sample(14.0)[0], 2.0)


def test_first_point_at_zero_is_not_interpolated(f: TrajectoryFollower) -> None:
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [0.0, 1.0], pts(1.0, 2.0), None, now=3.0)
    np.testing.assert_allclose(f.sample(3.0)[0], 1.0)
    np.testing.assert_allclose(f.sample(3.5)[0], 1.5)


def test_replace_skips_past_points(f: TrajectoryFollower) -> None:
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [2.0], pts(2.0), None, now=0.0)
    mid = f.sample(1.0)[0]  # halfway from Q0 to 2.0
    np.testing.assert_allclose(mid, (Q0 + 2.0) / 2)
    # Stamped 0.5 s in the past: its points at 0.6 and 0.9 are due already and skipped; motion
    # continues from the current setpoint to the first future point (1.5 at t=1.5).
    tfs = [0.1, 0.4, 1.0, 1.5]
    assert f.receive_trajectory(JOINT_NAMES, 0.5, tfs, pts(-5, -5, 1.5, 3.0), None, now=1.0)
    np.testing.assert_allclose(f.sample(1.0)[0], mid)
    np.testing.assert_allclose(f.sample(1.25)[0], (mid + 1.5) / 2)
    np.testing.assert_allclose(f.sample(1.5)[0], 1.5)
    np.testing.assert_allclose(f.sample(1.75)[0], 2.25)
    # Entirely in the past: rejected, the active trajectory goes on.
    assert not f.receive_trajectory(JOINT_NAMES, 0.2, [0.1, 0.5], pts(9, 9), None, now=1.75)
    assert f.rejected == 1
    np.testing.assert_allclose(f.sample(2.0)[0], 3.0)


def test_linear_versus_cubic(f: TrajectoryFollower) -> None:
    f.reset(np.zeros(7))
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0, 2.0], pts(1.0, 2.0), None, now=0.0)
    p, v = f.sample(0.25)
    np.testing.assert_allclose(p, 0.25)
    np.testing.assert_allclose(v, 1.0)
    f.reset(np.zeros(7))
    vel = pts(0.0, 0.0)
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0, 2.0], pts(1.0, 2.0), vel, now=0.0)
    # Hermite from (0, v=0) to (1, v=0): smoothstep 3s^2 - 2s^3, velocity 6s - 6s^2.
    p, v = f.sample(0.25)
    np.testing.assert_allclose(p, 3 * 0.25**2 - 2 * 0.25**3)
    np.testing.assert_allclose(v, 6 * 0.25 - 6 * 0.25**2)
    np.testing.assert_allclose(f.sample(1.0)[1], 0.0, atol=1e-12)
    # With velocities at the points, the curve passes them with those velocities.
    f.reset(np.zeros(7))
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0, 2.0], pts(1.0, 2.0), pts(1.0, 0.0), now=0.0)
    p, v = f.sample(1.0)
    np.testing.assert_allclose(p, 1.0)
    np.testing.assert_allclose(v, 1.0)
    # Empty velocity lists mean positions only (linear).
    f.reset(np.zeros(7))
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0], pts(1.0), [[]], now=0.0)
    np.testing.assert_allclose(f.sample(0.5)[1], 1.0)


def test_joint_names_any_order(f: TrajectoryFollower) -> None:
    names = list(reversed(JOINT_NAMES))
    target = np.arange(7) * 0.1  # in JOINT_NAMES order
    assert f.receive_trajectory(names, 0.0, [0.5], [list(target[::-1])], None, now=0.0)
    np.testing.assert_allclose(f.sample(0.5)[0], target)


def test_bad_trajectories_rejected(f: TrajectoryFollower) -> None:
    cases = [
        ([*JOINT_NAMES[:6], "elbow"], [1.0], pts(1.0)),  # unknown joint
        (JOINT_NAMES[:6], [1.0], [[1.0] * 6]),  # missing joint
        (JOINT_NAMES, [1.0, 1.0], pts(1.0, 2.0)),  # not increasing
        (JOINT_NAMES, [], []),  # no points
        (JOINT_NAMES, [1.0], [[1.0] * 6]),  # wrong length
        (JOINT_NAMES, [1.0], [[float("nan")] * 7]),
    ]
    for names, tfs, pos in cases:
        assert not f.receive_trajectory(names, 0.0, tfs, pos, None, now=1.0)
    assert f.rejected == len(cases) and f.accepted == 0
    assert "unknown" not in f.last_reject_reason
    np.testing.assert_array_equal(f.sample(2.0)[0], Q0)


def test_hold_after_end_and_idle_time(f: TrajectoryFollower) -> None:
    f.tick(0.0)
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [0.5], pts(1.0), None, now=0.0)
    for k in range(1, 21):  # ticks every 0.05 s up to 1.0 s
        f.tick(k * 0.05)
    assert f.mode == ENDED
    np.testing.assert_allclose(f.sample(3.0)[0], 1.0)
    assert f.idle_time == pytest.approx(0.5, abs=1e-9)
    assert f.idle_time_between(0.0, 0.75) == pytest.approx(0.25, abs=1e-9)
    # A new trajectory ends the idle period.
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0], pts(2.0), None, now=1.0)
    for k in range(21, 31):
        f.tick(k * 0.05)
    assert f.mode == ACTIVE
    assert f.idle_time == pytest.approx(0.5, abs=1e-9)


def test_velocity_jump(f: TrajectoryFollower) -> None:
    f.reset(np.zeros(7))
    f.tick(0.0)
    # Linear: velocity 1 then 3 at the corner at t=1.
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0, 2.0], pts(1.0, 4.0), None, now=0.0)
    for k in range(1, 20):
        f.tick(k * 0.1)
    jumps = f.velocity_jumps()
    assert f.max_velocity_jump == pytest.approx(2.0)
    assert jumps.max() == pytest.approx(2.0) and (jumps > 1e-9).sum() <= 2
    # Cubic with matching velocities: no jump bigger than the per-tick change of a smooth curve.
    f.reset(np.zeros(7))
    f.tick(0.0)
    assert f.receive_trajectory(
        JOINT_NAMES, 0.0, [1.0, 2.0], pts(1.0, 2.0), pts(1.0, 0.0), now=0.0
    )
    for k in range(1, 20):
        f.tick(k * 0.1)
    assert f.max_velocity_jump < 0.5


def test_direct_command_replaces_trajectory(f: TrajectoryFollower) -> None:
    assert f.receive_trajectory(JOINT_NAMES, 0.0, [1.0], pts(1.0), None, now=0.0)
    target = np.full(7, 0.03)
    assert f.command_positions(target)
    p, v = f.tick(0.5)
    np.testing.assert_array_equal(p, target)
    assert not v.any() and f.mode == DIRECT
    assert not f.command_positions([0.0] * 6)
    f.tick(2.0)
    assert f.idle_time == 0.0
