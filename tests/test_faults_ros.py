"""Faults injected mid-run on a real ROS 2 graph (issue "Reliability, measured", part "Faults"):
the node binary, enabled and commanding chunks of the test bundle, against an rclpy peer.

Each fault must end in a hold (a one-point JointTrajectory at the measured position, at rest), a
clear status (``~/status`` state and detail) and diagnostics (``/diagnostics``, status
"wam_policy: policy": WARN while STALE, ERROR while ERROR; the counters ``clock_jumps``,
``discarded_chunks``, ``inference_errors`` and ``rejected.<kind>``), then recovery once the fault
clears (chunks that are the test bundle's exact answer again, state RUNNING; a chunk whose first
step from the hold would be too fast may ramp in from the held position, which the node counts as
``catch_up_ramps`` and the tests check point by point). Throughout, nothing unsafe is commanded: every published point is finite and inside the joint limits (+-2.9 rad,
5 rad/s), and the first point of every trajectory is within max_jump (0.5 rad) of the measured
position.

The faults:

1. a camera, or the joint states, stop and resume (STALE and a hold, then RUNNING);
2. a camera changes resolution and keeps the new one (the new size is refused until it persists,
   ``rejected.image_size_changed`` counts 4 frames per camera changed, then chunks resume with the
   values the bundle predicts for the new content);
3. the model returns NaN (a faulty variant of the test bundle, written at test time by
   ``wam_testmodel.write_bundle(..., nan_on_unknown_word=True)``: every action is NaN when the
   instruction's first word is not in the vocab) (ERROR, ``inference_errors``, a hold; a good
   instruction recovers);
4. the inference takes longer than the chunk: ``debug_extra_latency_s`` 1.5 s for the bundle's 0.8 s
   chunk from the start (every chunk dropped as ``rejected.chunk_too_late``, nothing of it
   commanded), and mid-run, with ``use_sim_time``, by running the simulated clock 5 times faster
   than the wall clock for a while (a simulation faster than real time with a model that keeps
   its wall-clock latency), which recovers when the clock slows down again;
5. ROS time jumps back 30 s (a bag loop, ``use_sim_time``): a hold stamped on the new timeline,
   ``clock_jumps`` 1, then chunks from inputs on the new timeline;
6. a burst of 5000 joint states and 300 frames per camera on top of the normal streams;
7. the Triton server of the ``remote`` backend stops mid-run and comes back on the same port (a
   repository written by ``wam_policy_node triton-repo`` for the test bundle, served by
   ``python -m wam_export.triton_serve``): ERROR naming the Triton model and the server,
   ``inference_errors``, a hold, nothing else commanded while it is down; chunks, the bundle's
   exact answer, once it is back.

SIGTERM (and SIGINT) while commanding is covered by test_controller_ros
(``test_signal_ends_in_a_hold_and_exits_0``): a hold at the measured position, exit status 0.

Needs the environment of scripts/env.sh and a built node (WAM_NODE_BIN, default
target/release/wam_policy_node); the peer and the helpers are those of test_node_ros and
test_controller_ros. No assertion is about speed: every wait is generous.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.msg", reason="needs the package's messages: source scripts/env.sh")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from test_controller_ros import is_hold, peer_first, wait_hold  # noqa: E402
from test_node_ros import (  # noqa: E402
    CAMERAS,
    INSTRUCTION,
    NODE_BIN,
    Q,
    TOL,
    _limits,
    ext_image,
    quiet,
    running,
    start_constant,
    status_now,
    wait_matching,
    wait_status,
    wait_trajectories,
    wrist_image,
)
from test_triton_serve import (  # noqa: E402
    Server,
    descendants,
    needs_server,
    start_server,
    stop_server,
)
from wam_export.triton_serve import free_port  # noqa: E402
from wam_peer import (  # noqa: E402
    BUNDLE_JOINTS,
    TEST_BUNDLE,
    Expected,
    NodeProcess,
    Peer,
    Received,
    SimClock,
    expected_for,
    fixed_frame,
    joint_state,
    raw_image,
    stamp_seconds,
    trajectory_arrays,
    trajectory_error,
    uniform_rgb,
)
from wam_policy.msg import ActionChunk, PolicyStatus  # noqa: E402
from wam_testmodel import reference, spec, write_bundle  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

# The configured limits: +-2.9 rad, 5 rad/s, the first point within 0.5 rad of the measurement.
LIMIT = 2.9
MAX_VELOCITY = 5.0
MAX_JUMP = 0.5
LIMITS = _limits(
    **{
        "joint_limits.lower": [-LIMIT] * 7,
        "joint_limits.upper": [LIMIT] * 7,
        "joint_limits.max_velocity": [MAX_VELOCITY] * 7,
        "joint_limits.max_jump": MAX_JUMP,
    }
)
PARAMS: dict[str, Any] = {"instruction": INSTRUCTION, "enabled_at_start": True, **LIMITS}
# Generous waits: chunks come about every 0.8 s; these only bound how long a failure takes.
RECOVERY_TIMEOUT = 10.0
FAULT_TIMEOUT = 5.0
# ~/status comes every 0.1 s; a gap this long means the node stalled.
MAX_STATUS_GAP_S = 2.0
# start_constant's camera period (30 Hz).
CAMERA_PERIOD_S = 1.0 / 30.0
# The bundle's chunk: 8 steps of 0.1 s.
CHUNK_S = 0.8
# Counters /diagnostics always carries (rejection kinds appear with their first count).
DIAGNOSTIC_COUNTERS = ("clock_jumps", "discarded_chunks", "inference_errors", "catch_up_ramps")
# An instruction whose first word is not in the test bundle's vocab.
UNKNOWN_FIRST_WORD = "frobnicate the red cube"


def expected(images: Mapping[str, np.ndarray] | None = None) -> Expected:
    imgs = images or {"exterior": ext_image(), "wrist": wrist_image()}
    return expected_for(Q, [imgs[c] for c in CAMERAS], INSTRUCTION)


# -------------------------------------------------------------------------------------------------
# /diagnostics


def _level(value: Any) -> int:
    """A DiagnosticStatus level (a ``byte`` field: bytes of length 1 in rclpy) as an int."""
    if isinstance(value, (bytes, bytearray)):
        return value[0]
    return int(value)


OK = _level(DiagnosticStatus.OK)
WARN = _level(DiagnosticStatus.WARN)
ERROR = _level(DiagnosticStatus.ERROR)


@dataclass(frozen=True)
class Diag:
    """The node's status "wam_policy: policy" in one DiagnosticArray."""

    level: int
    message: str
    values: dict[str, str]

    def count(self, key: str) -> int:
        """A counter (``clock_jumps``, ``rejected.<kind>``...); 0 when the key is absent (a
        rejection kind appears with its first count)."""
        value = self.values.get(key, "0")
        assert value.isdigit(), f"{key} = {value!r} is not a count"
        return int(value)

    def rejections(self) -> dict[str, int]:
        return {
            k[len("rejected.") :]: self.count(k) for k in self.values if k.startswith("rejected.")
        }


class Diagnostics:
    """Records the node's /diagnostics (status "wam_policy: policy") with arrival times."""

    NAME = "wam_policy: policy"

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._lock = threading.Lock()
        self._items: list[Received[Diag]] = []
        peer.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on, QoSProfile(depth=100)
        )

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.NAME:
                diag = Diag(
                    _level(status.level),
                    status.message,
                    {kv.key: kv.value for kv in status.values},
                )
                with self._lock:
                    self._items.append(Received(diag, time.monotonic()))

    def since(self, t: float) -> list[Diag]:
        with self._lock:
            return [r.msg for r in self._items if r.at >= t]

    def wait(
        self,
        predicate: Callable[[Diag], bool],
        what: str,
        timeout: float = FAULT_TIMEOUT,
        since: float | None = None,
    ) -> Diag:
        """The first diagnostics received after ``since`` (default now) that satisfy
        ``predicate``."""
        start = self.peer.mark() if since is None else since

        def find() -> Diag | None:
            return next((d for d in self.since(start) if predicate(d)), None)

        got = self.peer.wait_for(find, timeout)
        if got is None:
            last = self.since(0.0)[-1:]
            pytest.fail(f"no /diagnostics with {what} in {timeout} s; last: {last}")
        return got

    def fresh(self, timeout: float = 3.0) -> Diag:
        return self.wait(lambda _d: True, "anything", timeout)


# -------------------------------------------------------------------------------------------------
# Checks


def unsafe_commands(
    trajectories: Sequence[JointTrajectory], measured: Sequence[float] = Q
) -> list[str]:
    """Every way a published trajectory breaks the configured limits (expected: none)."""
    q = np.asarray(measured, dtype=np.float64)
    out: list[str] = []
    for i, traj in enumerate(trajectories):
        if list(traj.joint_names) != list(BUNDLE_JOINTS):
            out.append(f"{i}: joint names {list(traj.joint_names)}")
        if not traj.points:
            out.append(f"{i}: no points")
            continue
        _, pos, vel = trajectory_arrays(traj)
        if pos.shape != (len(traj.points), len(BUNDLE_JOINTS)) or vel.shape != pos.shape:
            out.append(f"{i}: positions {pos.shape}, velocities {vel.shape}")
            continue
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
            out.append(f"{i}: a non-finite value")
            continue
        if np.any(pos < -LIMIT - 1e-12) or np.any(pos > LIMIT + 1e-12):
            out.append(f"{i}: a position outside +-{LIMIT}: {pos.min():.4f}..{pos.max():.4f}")
        if np.any(np.abs(vel) > MAX_VELOCITY + 1e-9):
            out.append(f"{i}: a velocity above {MAX_VELOCITY}: {np.abs(vel).max():.4f}")
        jump = float(np.abs(pos[0] - q).max())
        if jump > MAX_JUMP + 1e-9:
            out.append(f"{i}: first point {jump:.4f} from the measured position")
    return out


def non_finite_chunks(chunks: Sequence[ActionChunk]) -> list[int]:
    """chunk_id of every ActionChunk with a non-finite point (expected: none)."""
    out: list[int] = []
    for c in chunks:
        _, pos, vel = trajectory_arrays(c.trajectory)
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
            out.append(c.chunk_id)
    return out


def mismatches(trajectories: Sequence[JointTrajectory], exp: Expected) -> list[str]:
    """A line per trajectory (holds left out) that is not the expected chunk (expected: none)."""
    out: list[str] = []
    for traj in trajectories:
        if is_hold(traj) or trajectory_error(traj, exp) < TOL:
            continue
        steps, pos, vel = trajectory_arrays(traj)
        detail = ""
        if pos.shape == (len(steps), exp.actions.shape[1]) and 0 <= min(steps) <= max(steps) < 8:
            detail = (
                f"; position errors per point {np.abs(pos - exp.actions[steps]).max(axis=1)}"
                f", velocity errors per point {np.abs(vel - exp.velocities[steps]).max(axis=1)}"
            )
        out.append(
            f"stamp {stamp_seconds(traj.header.stamp):.6f}, steps {steps}, "
            f"error {trajectory_error(traj, exp):.6f}{detail}"
        )
    return out


def check_expected(trajectories: Sequence[JointTrajectory], exp: Expected, what: str) -> None:
    """At least one chunk among ``trajectories``, and every chunk is the expected one."""
    assert any(not is_hold(t) for t in trajectories), f"{what}: no chunk"
    wrong = mismatches(trajectories, exp)
    assert wrong == [], f"{what}: chunks that are not the expected answer:\n" + "\n".join(wrong)


def catch_up_weights(
    traj: JointTrajectory, exp: Expected, held: Sequence[float] = Q
) -> list[float] | None:
    """The weights of a chunk that starts with a catch-up ramp from the held position, or None
    when ``traj`` is not one. The node's rule: when a chunk's first step from where the command
    stream is (a hold) would break a velocity limit, it moves from there to the chunk over a
    ramp (``catch_up_ramps``): every point is ``(1 - w) * held + w * expected``, one weight per
    point for all joints, rising from the first point to the last within [0, 1]."""
    steps, pos, _ = trajectory_arrays(traj)
    if not steps or min(steps) < 0 or max(steps) >= exp.actions.shape[0]:
        return None
    start = np.asarray(held, dtype=np.float64)
    target = exp.actions[steps]
    span = target - start[None, :]
    weights: list[float] = []
    for k in range(len(steps)):
        moving = np.abs(span[k]) > 1e-3
        if not moving.any():
            return None
        w = (pos[k, moving] - start[moving]) / span[k, moving]
        if np.ptp(w) > 1e-3 or not -1e-6 <= float(w.mean()) <= 1.0 + 1e-6:
            return None
        if np.abs(pos[k, ~moving] - target[k, ~moving]).max(initial=0.0) > 1e-3:
            return None
        weights.append(float(w.mean()))
    if any(b < a - 1e-6 for a, b in zip(weights, weights[1:], strict=False)):
        return None
    return weights


def check_chunks(
    peer: Peer, diagnostics: Diagnostics, exp: Expected, since: float, before: Diag, what: str
) -> None:
    """Every chunk received after ``since`` is the expected one, or the expected one behind a
    catch-up ramp from the hold (see `catch_up_weights`; no more of them than ``catch_up_ramps``
    grew since ``before``)."""
    ramped: list[JointTrajectory] = []
    for traj in chunk_trajectories(peer, since):
        if trajectory_error(traj, exp) < TOL:
            continue
        wrong = mismatches([traj], exp)
        assert catch_up_weights(traj, exp) is not None, f"{what}: not the expected chunk: {wrong}"
        ramped.append(traj)
    if ramped:
        ramps = diagnostics.fresh().count("catch_up_ramps") - before.count("catch_up_ramps")
        assert ramps >= len(ramped), (
            f"{what}: {len(ramped)} chunks ramp in from the hold, {ramps} catch-up ramps counted"
        )


def check_recovery(
    peer: Peer, diagnostics: Diagnostics, exp: Expected, since: float, before: Diag, what: str
) -> None:
    """After ``since``: the node drives again (RUNNING, level OK) with the expected chunks (the
    first may ramp in from the hold, see `check_chunks`) and keeps driving."""
    wait_matching(peer, exp, since, timeout=RECOVERY_TIMEOUT)
    wait_running(peer, diagnostics, since, what)
    t = peer.mark()
    check_expected(wait_trajectories(peer, t, 3, RECOVERY_TIMEOUT), exp, what)
    check_chunks(peer, diagnostics, exp, since, before, what)


def chunk_trajectories(peer: Peer, since: float) -> list[JointTrajectory]:
    """Trajectories (holds left out) received after ``since``."""
    return [t for t in peer.trajectories_since(since) if not is_hold(t)]


def check_stamped_from(trajectories: Sequence[JointTrajectory], t: float, what: str) -> None:
    """Every trajectory carries an observation stamp of ``t`` or later (peer clock)."""
    for traj in trajectories:
        stamp = stamp_seconds(traj.header.stamp)
        assert stamp >= t, f"{what}: a trajectory stamped {t - stamp:.3f} s before {t:.3f}"


def max_gap(times: Sequence[float], start: float, end: float) -> float:
    """The longest time without an event in [start, end]."""
    points = [start] + sorted(x for x in times if start <= x <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def wait_running(peer: Peer, diagnostics: Diagnostics, since: float, what: str) -> None:
    """State RUNNING on ~/status and level OK on /diagnostics, both after ``since``."""
    wait_status(
        peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, f"RUNNING {what}", 5.0, since
    )
    d = diagnostics.wait(
        lambda d: d.values.get("state") == "RUNNING", f"state RUNNING {what}", 5.0, since
    )
    assert d.level == OK, f"{what}: level {d.level} while RUNNING: {d.message}"


@contextmanager
def guarded(node: NodeProcess, peer: Peer) -> Iterator[Diagnostics]:
    """/diagnostics of the run; at the end, every command the peer received is checked against
    the limits, every ActionChunk for non-finite values, and the node must still run."""
    diagnostics = Diagnostics(peer)
    yield diagnostics
    time.sleep(0.2)
    with peer.lock:
        trajectories = [r.msg for r in peer.trajectories]
        chunks = [r.msg for r in peer.chunks]
    assert unsafe_commands(trajectories) == [], "an unsafe command"
    assert non_finite_chunks(chunks) == [], "an ActionChunk with non-finite values"
    assert node.running(), f"the node exited ({node.returncode})"
    values = diagnostics.fresh().values
    missing = [k for k in DIAGNOSTIC_COUNTERS if k not in values]
    assert missing == [], f"/diagnostics without {missing}: {sorted(values)}"


@contextmanager
def faulted(params: Mapping[str, Any]) -> Iterator[tuple[NodeProcess, Peer, Diagnostics]]:
    """`running` with ``params``, the constant inputs of test_node_ros, and the node commanding
    the expected chunks (RUNNING) when the block starts."""
    with running(params) as (node, peer), guarded(node, peer) as diagnostics:
        start_constant(peer, node)
        wait_matching(peer, expected(), 0.0, timeout=RECOVERY_TIMEOUT)
        wait_running(peer, diagnostics, 0.0, "before the fault")
        yield node, peer, diagnostics


# -------------------------------------------------------------------------------------------------
# 1. Inputs that stop and resume


@pytest.mark.parametrize(
    ("stream", "named"),
    [("exterior", "exterior"), ("wrist", "wrist"), ("joints", "joint states")],
)
def test_input_stops_then_resumes(stream: str, named: str) -> None:
    exp = expected()
    with faulted(PARAMS) as (node, peer, diagnostics):
        before = status_now(peer)
        before_diag = diagnostics.fresh()
        t0 = peer.mark()
        peer.pause(stream)
        wait_hold(peer, t0, Q, f"hold when {stream} stopped", FAULT_TIMEOUT)
        s = wait_status(
            peer, lambda s: s.state == PolicyStatus.STATE_STALE, "STALE", FAULT_TIMEOUT, t0
        )
        assert s.state_name == "STALE" and named in s.detail, s.detail
        assert s.stale_observations == before.stale_observations + 1, s
        d = diagnostics.wait(lambda d: d.values.get("state") == "STALE", "state STALE", since=t0)
        assert d.level == WARN, (d.level, d.message)
        assert named in d.message, d.message

        # Stale: nothing but the one hold, and the status says so all along.
        t1 = peer.mark()
        assert quiet(peer, t1, 1.5) == [], "a command while stale"
        states = {x.state_name for x in peer.statuses_since(t1)}
        assert states == {"STALE"}, states
        assert peer.chunks_since(t1) == []

        t_resume = peer.now_s()
        t2 = peer.mark()
        peer.resume(stream)
        check_recovery(peer, diagnostics, exp, t2, before_diag, f"after {stream} resumed")
        if stream != "joints":
            # The chunks come from frames sent after the resume: their stamp is the older of the
            # cameras' newest frames, so at most one frame period (1/30 s) before it.
            got = chunk_trajectories(peer, t2)
            check_stamped_from(got, t_resume - CAMERA_PERIOD_S, "after the resume")


# -------------------------------------------------------------------------------------------------
# 2. A camera changes resolution and keeps it


def _frames(images: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {cam: fixed_frame(raw_image(rgb, "rgb8", frame_id=cam)) for cam, rgb in images.items()}


def test_camera_resolution_change_is_refused_until_it_persists_then_used() -> None:
    old = expected()
    # Uniform colours: the node's resize to 32x32 gives the same colour, so the expected values
    # follow from the new content alone.
    ext_rgb, wrist_rgb = (220, 90, 30), (20, 40, 160)
    first = {"exterior": uniform_rgb(48, 40, ext_rgb), "wrist": wrist_image()}
    first_seen = {"exterior": uniform_rgb(32, 32, ext_rgb), "wrist": wrist_image()}
    second = {"exterior": uniform_rgb(64, 48, ext_rgb), "wrist": uniform_rgb(64, 48, wrist_rgb)}
    second_seen = {
        "exterior": uniform_rgb(32, 32, ext_rgb),
        "wrist": uniform_rgb(32, 32, wrist_rgb),
    }
    phases = [
        # (what, new images, what the model sees, cameras whose size changes)
        ("exterior 32x32 -> 48x40", first, expected(first_seen), 1),
        ("both -> 64x48", second, expected(second_seen), 2),
    ]
    with faulted(PARAMS) as (node, peer, diagnostics):
        current = old
        for what, images, exp, changed in phases:
            assert np.abs(exp.actions - current.actions).max() > 1e-3, what
            before = diagnostics.fresh()
            t0 = peer.mark()
            for cam, factory in _frames(images).items():
                peer.set_camera(cam, factory, 30.0)
            wait_matching(peer, exp, t0, timeout=RECOVERY_TIMEOUT)
            t1 = peer.mark()
            wait_running(peer, diagnostics, t1, f"after {what}")
            after = diagnostics.fresh()
            grown = {
                k: n - before.rejections().get(k, 0)
                for k, n in after.rejections().items()
                if n > before.rejections().get(k, 0)
            }
            # The first 4 frames of the new size, per camera changed; nothing else refused.
            assert grown == {"image_size_changed": 4 * changed}, (what, grown)
            # Every chunk is the answer to the old content or to the new one, never a mix.
            for c in peer.chunks_since(t0):
                errors = (
                    trajectory_error(c.trajectory, current),
                    trajectory_error(c.trajectory, exp),
                )
                assert min(errors) < TOL, (what, c.chunk_id, errors)
            # Once the new size is in use, only the new answer.
            got = wait_trajectories(peer, t1, 3, RECOVERY_TIMEOUT)
            check_expected(got, exp, f"after {what}")
            # A hold is not required (the old frames stay fresh while the new size is refused),
            # but any that came is at the measured position.
            for t in peer.trajectories_since(t0):
                if is_hold(t):
                    assert np.allclose(t.points[0].positions, Q, rtol=0.0, atol=1e-9), what
            current = exp
        assert status_now(peer).bad_images == 4 * 3


# -------------------------------------------------------------------------------------------------
# 3. The model returns NaN


@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The faulty variant of the test bundle: NaN actions when the first word is unknown."""
    folder = tmp_path_factory.mktemp("wam_test_nan_on_unknown_word")
    write_bundle(folder, nan_on_unknown_word=True)
    return folder


def test_model_returning_nan_holds_reports_error_then_recovers(nan_bundle: Path) -> None:
    assert reference.tokenize(UNKNOWN_FIRST_WORD)[0] == spec.UNK_ID
    assert reference.tokenize(INSTRUCTION)[0] != spec.UNK_ID
    exp = expected()
    params = {**PARAMS, "bundle_path": str(nan_bundle)}
    with faulted(params) as (node, peer, diagnostics):
        assert peer.chunks_since()[-1].model_id == spec.NAN_ON_UNKNOWN_WORD_MODEL_ID
        before = diagnostics.fresh()
        assert before.count("inference_errors") == 0
        t0 = peer.mark()
        peer.set_instruction(UNKNOWN_FIRST_WORD)
        wait_hold(peer, t0, Q, "hold after a non-finite chunk", FAULT_TIMEOUT)
        s = wait_status(
            peer, lambda s: s.state == PolicyStatus.STATE_ERROR, "ERROR", FAULT_TIMEOUT, t0
        )
        assert s.state_name == "ERROR" and "non-finite" in s.detail, s.detail
        d = diagnostics.wait(lambda d: d.values.get("state") == "ERROR", "state ERROR", since=t0)
        assert d.level == ERROR, (d.level, d.message)
        assert "non-finite" in d.message, d.message
        assert d.count("inference_errors") >= 1, d.values

        # While the model keeps failing: it is asked again and again, refused every time, and
        # nothing is commanded after the hold.
        t1 = peer.mark()
        assert quiet(peer, t1, 2.0) == [], "a command while the model returns NaN"
        assert peer.chunks_since(t0) == [], "an ActionChunk from a NaN chunk"
        states = {x.state_name for x in peer.statuses_since(t1)}
        assert states == {"ERROR"}, states
        later = diagnostics.fresh()
        assert later.count("inference_errors") > d.count("inference_errors"), later.values
        assert later.level == ERROR

        # A good instruction: the model answers again, and the node drives.
        t2 = peer.mark()
        peer.set_instruction(INSTRUCTION)
        check_recovery(peer, diagnostics, exp, t2, before, "after a good instruction")


# -------------------------------------------------------------------------------------------------
# 4. The inference takes longer than the chunk


def test_model_slower_than_its_chunk_commands_nothing_of_it() -> None:
    # 1.5 s of extra latency for a 0.8 s chunk: every chunk lands after its last step was due.
    params = {**PARAMS, "debug_extra_latency_s": 1.5}
    with running(params) as (node, peer), guarded(node, peer) as diagnostics:
        start_constant(peer, node)
        d = diagnostics.wait(
            lambda d: d.count("rejected.chunk_too_late") >= 3,
            "rejected.chunk_too_late >= 3",
            timeout=30.0,
        )
        assert node.running()
        # Nothing of those chunks was commanded: at most holds at the measured position.
        assert peer.chunks_since() == [], "an ActionChunk from a late chunk"
        commanded = peer.trajectories_since()
        assert all(is_hold(t) for t in commanded), [len(t.points) for t in commanded]
        for t in commanded:
            assert np.allclose(t.points[0].positions, Q, rtol=0.0, atol=1e-9)
        s = status_now(peer)
        assert s.chunks_published == 0 and s.inferences >= 3, s
        # Alive and still reporting it: the kind keeps growing, and ~/status keeps coming.
        t1 = peer.mark()
        diagnostics.wait(
            lambda x: x.count("rejected.chunk_too_late") > d.count("rejected.chunk_too_late"),
            "more rejected.chunk_too_late",
            timeout=10.0,
        )
        assert len(peer.statuses_since(t1)) >= 5
        # The status tells an operator that nothing is commanded, not "RUNNING" with level OK.
        last = diagnostics.fresh()
        s = status_now(peer)
        assert s.state != PolicyStatus.STATE_RUNNING and s.detail, (
            f"every chunk is dropped as too late, yet the status is {s.state_name} "
            f"(detail {s.detail!r}; /diagnostics level {last.level}, {last.message!r})"
        )
        assert last.level != OK, (last.level, last.message)


class WarpClock:
    """Simulated time that runs ``rate`` times as fast as the wall clock; the rate can change
    mid-run (time stays continuous). Pass ``now_s`` as a :class:`Peer`'s ``clock``."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._base_s = start_s
        self._t0 = time.monotonic()
        self._rate = 1.0

    def now_s(self) -> float:
        with self._lock:
            return self._base_s + self._rate * (time.monotonic() - self._t0)

    def set_rate(self, rate: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._base_s += self._rate * (now - self._t0)
            self._t0 = now
            self._rate = rate


def test_model_slower_than_its_chunk_mid_run_holds_then_recovers() -> None:
    # 0.3 s of wall-clock latency: fine in real time, 1.5 s of simulated time (more than the
    # 0.8 s chunk) while the simulation runs 5 times faster than real time.
    latency_s, warp = 0.3, 5.0
    assert latency_s * warp > 1.5 * CHUNK_S
    exp = expected()
    clock = WarpClock()
    params = {**PARAMS, "use_sim_time": True, "debug_extra_latency_s": latency_s}
    with peer_first(params, clock=clock.now_s) as (node, peer), guarded(node, peer) as diagnostics:
        peer.set_clock(200.0)
        # Inputs dense enough in simulated time at 5x (a joint state every 25 ms, a frame every
        # 0.17 s: inside sync_slop_s and max_image_age_s).
        start_constant(peer, node, joint_rate_hz=200.0)
        wait_matching(peer, exp, 0.0, timeout=15.0)
        wait_running(peer, diagnostics, 0.0, "before the fault")
        before = diagnostics.fresh()

        t0 = peer.mark()
        clock.set_rate(warp)
        wait_hold(peer, t0, Q, "hold when the chunks came too late", 10.0)
        diagnostics.wait(
            lambda d: (
                d.count("rejected.chunk_too_late") >= before.count("rejected.chunk_too_late") + 2
            ),
            "2 more rejected.chunk_too_late",
            timeout=15.0,
            since=t0,
        )
        # Too late: nothing more is commanded, only the one hold.
        t1 = peer.mark()
        assert quiet(peer, t1, 2.0) == [], "a command while every chunk came too late"
        assert peer.chunks_since(t1) == [], "an ActionChunk while every chunk came too late"
        during = status_now(peer)
        during_diag = diagnostics.fresh()
        assert node.running()

        # Real time again: the chunks are in time, and the node drives.
        t2 = peer.mark()
        clock.set_rate(1.0)
        check_recovery(peer, diagnostics, exp, t2, before, "after the clock slowed down")

        # While the chunks came too late, the status told an operator that nothing was
        # commanded, not "RUNNING" with level OK.
        assert during.state != PolicyStatus.STATE_RUNNING and during.detail, (
            f"every chunk was dropped as too late, yet the status was {during.state_name} "
            f"(detail {during.detail!r}; /diagnostics level {during_diag.level}, "
            f"{during_diag.message!r})"
        )
        assert during_diag.level != OK, (during_diag.level, during_diag.message)


# -------------------------------------------------------------------------------------------------
# 5. ROS time jumps back


def test_clock_jumping_back_holds_then_drives_on_the_new_timeline() -> None:
    exp = expected()
    sim = SimClock(1000.0)
    params = {**PARAMS, "use_sim_time": True}
    with peer_first(params, clock=sim.now_s) as (node, peer), guarded(node, peer) as diagnostics:
        peer.set_clock(100.0)
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0, timeout=15.0)
        wait_running(peer, diagnostics, 0.0, "before the jump")
        before = diagnostics.fresh()
        assert before.count("clock_jumps") == 0

        # A bag loop: the clock, and the stamps of every input after it, go back 30 s.
        t_old = sim.now_s()
        t0 = peer.mark()
        sim.start_s -= 30.0
        t_new = sim.now_s()
        assert t_new < t_old - 29.0
        hold = wait_hold(peer, t0, Q, "hold when the clock jumped back", FAULT_TIMEOUT)
        stamp = stamp_seconds(hold.header.stamp)
        assert t_new - 1.0 <= stamp <= sim.now_s(), ("hold not on the new timeline", stamp, t_new)
        d = diagnostics.wait(lambda d: d.count("clock_jumps") >= 1, "clock_jumps 1", since=t0)
        assert d.count("clock_jumps") == 1, d.values

        # Drives again, on inputs stamped on the new timeline.
        check_recovery(peer, diagnostics, exp, t0, before, "after the jump")
        for traj in chunk_trajectories(peer, t0):
            s = stamp_seconds(traj.header.stamp)
            assert t_new - 1.0 <= s <= sim.now_s(), ("a chunk from the old timeline", s, t_new)
        # One jump, counted once.
        assert diagnostics.fresh().count("clock_jumps") == 1


# -------------------------------------------------------------------------------------------------
# 6. A burst of messages


BURST_JOINT_STATES = 5000
BURST_FRAMES = 300  # per camera


def test_burst_of_thousands_of_messages() -> None:
    exp = expected()
    with faulted(PARAMS) as (node, peer, diagnostics):
        joints = peer.node.create_publisher(
            JointState, peer.topics.joint_states, qos_profile_sensor_data
        )
        cameras = {
            cam: peer.node.create_publisher(Image, topic, qos_profile_sensor_data)
            for cam, topic in peer.topics.cameras.items()
        }
        frames = {
            cam: raw_image(img, "rgb8", frame_id=cam)
            for cam, img in (("exterior", ext_image()), ("wrist", wrist_image()))
        }
        pubs = [joints, *cameras.values()]
        before = diagnostics.fresh()
        assert peer.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), 10.0), (
            "the burst publishers were not discovered"
        )

        # As fast as this thread can, on top of the normal streams: the same content, fresh
        # stamps (the subscriptions' queues may drop some: nothing is asserted about how many
        # the node took).
        t0 = peer.mark()
        every = BURST_JOINT_STATES // BURST_FRAMES
        for i in range(BURST_JOINT_STATES):
            joints.publish(joint_state(BUNDLE_JOINTS, Q, peer.now()))
            if i % every == 0 and i // every < BURST_FRAMES:
                for cam, pub in cameras.items():
                    frames[cam].header.stamp = peer.now()
                    pub.publish(frames[cam])
        t1 = peer.mark()
        assert node.running(), "the node exited during the burst"

        # Drives again with the right values (during the burst too: its content was the same;
        # had the node fallen behind and held, the next chunk could ramp in from the hold).
        check_recovery(peer, diagnostics, exp, t1, before, "after the burst")
        check_chunks(peer, diagnostics, exp, t0, before, "during the burst")
        end = peer.mark()
        with peer.lock:
            status_times = [r.at for r in peer.statuses if t0 <= r.at <= end]
        gap = max_gap(status_times, t0, end)
        assert gap < MAX_STATUS_GAP_S, f"{gap:.2f} s without a status around the burst"
        # Any hold (had the node fallen behind) is at the measured position.
        for t in peer.trajectories_since(t0):
            if is_hold(t):
                assert np.allclose(t.points[0].positions, Q, rtol=0.0, atol=1e-9)


# -------------------------------------------------------------------------------------------------
# 7. The remote backend's Triton server is lost, then comes back

# pytriton's tritonserver is ready in about 8 s and stops in 3-6 s after SIGTERM.
SERVER_STOP_TIMEOUT = 30.0


class TritonServer:
    """``python -m wam_export.triton_serve <repo> --http-port <port>`` (test_triton_serve's
    `start_server`), started and stopped on one port; its stderr is appended to ``log``. `stop`
    ends the server and everything it started, and returns once nothing accepts connections on the
    port, so that it can start again there. As a context manager: started on entry; on exit
    whatever is left of it is stopped (`close`), and its log tail is attached to a failure."""

    def __init__(self, repo: Path, port: int, log: Path) -> None:
        self.repo = repo
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.server: Server | None = None

    def start(self) -> None:
        assert self.server is None, "already started"
        self.server = start_server(self.repo, self.log, self.port)
        assert self.server.url == self.url, self.server.url

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Sends ``sig`` and waits until the server, its tritonserver and their helpers are gone
        and the port is free."""
        server = self.server
        assert server is not None, "not started"
        try:
            stop_server(server, sig)
        finally:
            self.close()
        deadline = time.monotonic() + SERVER_STOP_TIMEOUT
        while not self.port_free():
            assert time.monotonic() < deadline, f"port {self.port} still taken after the stop"
            time.sleep(0.2)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc is not None:
            exc.add_note(f"Triton server log tail:\n{self.log_tail()}")

    def close(self) -> None:
        """Ends whatever is left of the server: SIGTERM (so that it removes its work folder), then
        SIGKILL for the process and its tritonserver and helpers if they linger (nothing is left
        after a clean `stop`)."""
        server, self.server = self.server, None
        if server is None:
            return
        proc = server.proc
        pids = server.descendants
        if proc.poll() is None:
            pids |= descendants(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def port_free(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return False
        except OSError:
            return True

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def remote_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle's Triton model repository, as ``wam_policy_node triton-repo`` writes it
    (``--cpu``: instance groups on the CPU)."""
    out = tmp_path_factory.mktemp("wam_test_triton") / "repo"
    r = subprocess.run(
        [str(NODE_BIN), "triton-repo", str(TEST_BUNDLE), str(out), "--cpu"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["context", "decode", "denoise", "encode"]
    return out


@needs_server
def test_remote_server_lost_holds_reports_error_then_recovers(
    remote_repository: Path, tmp_path: Path
) -> None:
    exp = expected()
    triton = TritonServer(remote_repository, free_port(), tmp_path / "triton.log")
    server = f"127.0.0.1:{triton.port}"
    params = {**PARAMS, "backend": "remote", "remote_url": triton.url, "remote_timeout_s": 1.0}
    # faulted: the node commands the bundle's exact answer, computed on the server.
    with triton, faulted(params) as (node, peer, diagnostics):
        before = diagnostics.fresh()
        assert before.count("inference_errors") == 0, before.values

        t0 = peer.mark()
        triton.stop()
        wait_hold(peer, t0, Q, "hold when the server was lost", FAULT_TIMEOUT)
        s = wait_status(
            peer, lambda s: s.state == PolicyStatus.STATE_ERROR, "ERROR", FAULT_TIMEOUT, t0
        )
        assert "Triton model" in s.detail and server in s.detail, s.detail
        d = diagnostics.wait(lambda d: d.values.get("state") == "ERROR", "state ERROR", since=t0)
        assert d.level == ERROR, (d.level, d.message)
        assert "Triton model" in d.message and server in d.message, d.message
        assert d.count("inference_errors") >= 1, d.values

        # While the server is down: the node keeps asking, every chunk fails, and nothing is
        # commanded after the hold.
        t1 = peer.mark()
        assert quiet(peer, t1, 3.0) == [], "a command while the server was down"
        assert peer.chunks_since(t1) == [], "an ActionChunk while the server was down"
        states = {x.state_name for x in peer.statuses_since(t1)}
        assert states == {"ERROR"}, states
        later = diagnostics.fresh()
        assert later.count("inference_errors") > d.count("inference_errors"), later.values
        assert later.level == ERROR
        # Each failed chunk is a request that waited out the stage's back-off (0.25 s after a first
        # failure, doubling up to 2 s): the count grows by requests, not by control ticks (without
        # the wait, 10 or more a second here). The stages back off separately: a few extra.
        down_s = time.monotonic() - t0
        assert later.count("inference_errors") <= 8 + down_s / 2.0, (down_s, later.values)
        assert "asked again in" in later.message, later.message
        assert node.running(), "the node exited without its server"

        # The server comes back on the same port: the node drives again, with the exact answer.
        t2 = peer.mark()
        triton.start()
        check_recovery(peer, diagnostics, exp, t2, before, "after the server came back")
