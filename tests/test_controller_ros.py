"""The node's controller rules on a real ROS 2 graph: the node binary against an rclpy peer.

What is checked here is what the node decides, end to end: a chunk whose inference began before a
disable, enable or reset is never commanded (``discarded_chunks``); every way of no longer driving
(disable, reset, stale inputs, SIGINT/SIGTERM) ends in a hold at the measured position, inside the
joint limits; measured positions far outside the limits and stamps from the future are bad input;
a stray frame size after a reset does not lock a camera; ``use_sim_time`` follows /clock; a latched
instruction published before the node started is used; the node refuses to start without joint
limits unless it is a dry run; and ``record_path`` writes an MCAP file that an independent reader
(the ``mcap`` and ``mcap-ros2-support`` packages) decodes and that ``wam_policy_node replay``
replays to identical commands (and refuses to call identical when a parameter changes them).

Needs the environment of scripts/env.sh and a built node (WAM_NODE_BIN, default
target/release/wam_policy_node); the peer and the helpers are those of test_node_ros.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.msg", reason="needs the package's messages: source scripts/env.sh")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from test_execution_ros import Recorder  # noqa: E402
from test_node_ros import (  # noqa: E402
    CAMERAS,
    CHUNK_TIMEOUT,
    INSTRUCTION,
    NODE_BIN,
    TOL,
    Q,
    _limits,
    ext_image,
    next_domain,
    quiet,
    running,
    start_constant,
    status_now,
    wait_matching,
    wait_status,
    wait_trajectories,
    wrist_image,
)
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from wam_peer import (  # noqa: E402
    BUNDLE_JOINTS,
    WIDE_LIMITS,
    Expected,
    NodeProcess,
    Peer,
    PeerTopics,
    SimClock,
    expected_for,
    fixed_joints,
    joint_state,
    raw_image,
    stamp_seconds,
    time_of,
    trajectory_arrays,
    trajectory_error,
    uniform_rgb,
)
from wam_peer.stack import ParamClient  # noqa: E402
from wam_policy.msg import PolicyStatus  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

# The test bundle's chunk lasts 0.8 s (8 steps of 0.1 s): a slower model would publish no chunk at
# all (every step due before it is done). With 0.5 s, inferences run back to back (what is left of
# a chunk when it lands is less than the latency), so one starts right after each chunk arrives
# and runs for 0.5 s: the window in which the tests below disable, enable or reset.
SLOW_LATENCY_S = 0.5
# Between ~/enable false and ~/enable true: every frame the node has when it enables again was
# stamped after the disable (the cameras send at 30 Hz), well inside the inference's 0.5 s.
ENABLE_GAP_S = 0.15
HOLD_TOL = 1e-9
# Generous: waiting only, never a claim about speed.
EXIT_TIMEOUT = 5.0
# The limits of the hold tests: +-2.9 rad on every joint, 0.3 rad from the measured state at most.
LIMIT = 2.9
TIGHT_LIMITS = _limits(
    **{
        "joint_limits.lower": [-LIMIT] * 7,
        "joint_limits.upper": [LIMIT] * 7,
        "joint_limits.max_jump": 0.3,
    }
)
# Parameters that start the node with no joint limits at all (NodeProcess leaves None out).
NO_LIMITS: dict[str, Any] = {k: None for k in WIDE_LIMITS if k.startswith("joint_limits.")}
STREAM_TOPIC = "/forward_position_controller/commands"
FUTURE_S = 3600.0
STATE_NAMES = {"DISABLED", "WAITING", "RUNNING", "STALE", "ERROR"}


def expected(q: Sequence[float] = Q, instruction: str = INSTRUCTION) -> Expected:
    return expected_for(q, [ext_image(), wrist_image()], instruction)


def is_hold(traj: JointTrajectory) -> bool:
    return len(traj.points) == 1


def check_hold(traj: JointTrajectory, q: Sequence[float], what: str) -> None:
    """``traj`` is a hold: one point at ``q`` (the action joints' measured positions), at rest."""
    assert list(traj.joint_names) == list(BUNDLE_JOINTS), f"{what}: {traj.joint_names}"
    assert len(traj.points) == 1, f"{what}: {len(traj.points)} points"
    point = traj.points[0]
    assert np.allclose(point.positions, q, rtol=0.0, atol=HOLD_TOL), (what, list(point.positions))
    assert np.all(np.asarray(point.velocities) == 0.0), (what, list(point.velocities))


def wait_hold(
    peer: Peer, since: float, q: Sequence[float], what: str, timeout: float = 3.0
) -> JointTrajectory:
    """The first one-point trajectory received after ``since`` whose positions are ``q``."""

    def find() -> JointTrajectory | None:
        for t in peer.trajectories_since(since):
            if is_hold(t) and np.allclose(t.points[0].positions, q, rtol=0.0, atol=HOLD_TOL):
                return t
        return None

    hold = peer.wait_for(find, timeout)
    if hold is None:
        got = [
            (len(t.points), [round(p, 4) for p in t.points[0].positions] if t.points else [])
            for t in peer.trajectories_since(since)
        ]
        pytest.fail(f"{what}: no hold at {list(q)} in {timeout} s; trajectories: {got}")
    check_hold(hold, q, what)
    return hold


def wait_chunk_after(peer: Peer, since: float, timeout: float = 10.0) -> None:
    """Waits for an ActionChunk received after ``since``."""
    assert peer.wait_for(lambda: peer.chunks_since(since), timeout), f"no chunk in {timeout} s"


def wait_exit(node: NodeProcess, timeout: float = EXIT_TIMEOUT) -> int:
    try:
        return node.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not exit within {timeout} s of the signal")


def outside_limits(trajectories: Sequence[JointTrajectory]) -> list[tuple[int, float]]:
    """(index, position) of every trajectory position outside [-LIMIT, LIMIT] (expected: none)."""
    out: list[tuple[int, float]] = []
    for i, t in enumerate(trajectories):
        for p in t.points:
            out += [(i, x) for x in p.positions if not (-LIMIT - 1e-12 <= x <= LIMIT + 1e-12)]
    return out


def base_params(topics: PeerTopics, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters `running` gives the node (exact chunks, plans from the measured state)."""
    out: dict[str, Any] = {"boundary_mode": "replace", "ramp_in_s": 0.0, "plan_anchor": "measured"}
    out.update(topics.node_params())
    out.update(params)
    return out


@contextmanager
def peer_first(
    params: Mapping[str, Any],
    *,
    clock: Callable[[], float] | None = None,
    before_node: Callable[[Peer], None] | None = None,
) -> Iterator[tuple[NodeProcess, Peer]]:
    """Like `running`, but the peer (stamping with ``clock``) exists before the node starts and
    ``before_node(peer)`` runs in between."""
    domain = next_domain()
    topics = PeerTopics()
    with Peer(domain, topics, clock=clock) as peer:
        if before_node is not None:
            before_node(peer)
        with NodeProcess(base_params(topics, params), domain, binary=NODE_BIN) as node:
            try:
                yield node, peer
                assert not peer.publish_errors, peer.publish_errors
            except BaseException as e:
                e.add_note(
                    f"node (domain {domain}) exit={node.returncode}; log tail:\n"
                    f"{node.stderr_tail()}"
                )
                raise


def check_stamps_after(peer: Peer, cycles: Sequence[tuple[float, float]], what: str) -> None:
    """For each (mark, t): every trajectory received after ``mark`` has an observation stamp of
    ``t`` or later (nothing computed from an observation before ``t`` was commanded)."""
    for n, (mark, t) in enumerate(cycles):
        for traj in peer.trajectories_since(mark):
            stamp = stamp_seconds(traj.header.stamp)
            assert stamp >= t, (
                f"{what} {n}: a trajectory ({len(traj.points)} points) published after it carries "
                f"the observation stamp {stamp:.6f}, {t - stamp:.3f} s before the call"
            )


# -------------------------------------------------------------------------------------------------


# Enabled with an instruction and a model slowed down so that an inference is always running.
SLOW_PARAMS: dict[str, Any] = {
    "instruction": INSTRUCTION,
    "enabled_at_start": True,
    "debug_extra_latency_s": SLOW_LATENCY_S,
}


def test_disable_then_enable_during_an_inference_discards_its_chunk() -> None:
    with running(SLOW_PARAMS) as (node, peer):
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, 15.0)
        cycles: list[tuple[float, float]] = []
        for _ in range(3):
            # Right after a chunk arrives, the next inference has just started.
            since = peer.mark()
            wait_chunk_after(peer, since)
            t_disable = peer.now_s()
            assert peer.enable(False).success
            time.sleep(ENABLE_GAP_S)
            assert peer.enable(True).success
            mark = peer.mark()
            cycles.append((mark, t_disable))
            # The node drives again: a chunk from an observation after the disable.
            wait_chunk_after(peer, mark)
            check_stamps_after(peer, cycles, "disable")
        s = wait_status(
            peer, lambda s: s.discarded_chunks >= 1, "discarded_chunks >= 1", 3.0, peer.mark()
        )
        assert s.enabled and node.running()


def test_reset_during_an_inference_holds_and_discards_its_chunk() -> None:
    with running(SLOW_PARAMS) as (node, peer):
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, 15.0)
        cycles: list[tuple[float, float]] = []
        for _ in range(2):
            since = peer.mark()
            wait_chunk_after(peer, since)
            # No frame in flight across the reset: one stamped just before the call could reach
            # the node after it and would rightly be used.
            peer.pause(*CAMERAS)
            time.sleep(0.05)
            t_reset = peer.now_s()
            mark = peer.mark()
            assert peer.reset().success
            peer.resume(*CAMERAS)
            cycles.append((mark, t_reset))
            hold = wait_hold(peer, mark, Q, "hold after ~/reset", 2.0)
            assert stamp_seconds(hold.header.stamp) >= t_reset
            wait_chunk_after(peer, mark)
            check_stamps_after(peer, cycles, "reset")
        wait_status(
            peer,
            lambda s: s.discarded_chunks >= 1 and s.state == PolicyStatus.STATE_RUNNING,
            "RUNNING with discarded_chunks >= 1",
            3.0,
            peer.mark(),
        )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_in_a_hold_and_exits_0(sig: signal.Signals) -> None:
    params = {"instruction": INSTRUCTION, "enabled_at_start": True}
    with running(params) as (node, peer):
        start_constant(peer, node)
        wait_trajectories(peer, 0.0, 2, 2 * CHUNK_TIMEOUT)
        mark = peer.mark()
        assert node.pid is not None
        os.kill(node.pid, sig)
        code = wait_exit(node)
        assert code == 0, f"exit status {code} after {sig.name}"
        wait_hold(peer, mark, Q, f"hold on {sig.name}")
        # The hold is the last command.
        time.sleep(0.3)
        assert is_hold(peer.trajectories_since(mark)[-1]), "a trajectory after the hold"


def test_sigterm_in_stream_mode_ends_on_the_measured_position() -> None:
    params = {
        "instruction": INSTRUCTION,
        "enabled_at_start": True,
        "output_mode": "stream",
        "stream_message": "float64_multi_array",
        "stream_rate_hz": 100.0,
        "stream_topic": STREAM_TOPIC,
    }
    with running(params) as (node, peer):
        rec = Recorder(peer, Float64MultiArray, STREAM_TOPIC)
        start_constant(peer, node)
        wait_status(peer, lambda s: s.chunks_published >= 2, "2 chunks", 10.0)
        rec.wait(50, timeout=10.0)
        assert node.pid is not None
        os.kill(node.pid, signal.SIGTERM)
        code = wait_exit(node)
        assert code == 0, f"exit status {code} after SIGTERM"
        time.sleep(0.5)
        setpoints = np.array([list(m.data) for _, m in rec.since(0.0)])
        # The stream was moving (so that ending exactly on the measured position means a hold) ...
        assert np.abs(setpoints - np.asarray(Q)).max() > 1e-3
        # ... and its last setpoint is the measured position.
        assert np.allclose(setpoints[-1], Q, rtol=0.0, atol=HOLD_TOL), list(setpoints[-1])
        assert peer.trajectories_since() == []


@pytest.mark.parametrize("value", [5.0, 1e300], ids=["5.0", "1e300"])
def test_measurement_far_outside_the_limits_is_bad_input(value: float) -> None:
    absurd = (value,) + Q[1:]
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, **TIGHT_LIMITS}
    with running(params) as (node, peer):
        # Only absurd measurements: counted, never a reason to run.
        start_constant(peer, node, q=absurd)
        wait_status(peer, lambda s: s.bad_joint_states > 0, "bad_joint_states > 0", 5.0)
        time.sleep(1.5)
        t1 = peer.mark()
        states = {s.state_name for s in peer.statuses_since(0.0)}
        assert "RUNNING" not in states, states
        assert peer.chunks_since() == []

        # Valid measurements: the node drives.
        peer.set_joints(fixed_joints(BUNDLE_JOINTS, Q), 100.0)
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 6.0, t1)
        wait_chunk_after(peer, t1)

        # Absurd again: ignored, so the joint states turn stale; the hold is inside the limits.
        before = status_now(peer)
        t2 = peer.mark()
        peer.set_joints(fixed_joints(BUNDLE_JOINTS, absurd), 100.0)
        wait_status(
            peer,
            lambda s: (
                s.bad_joint_states > before.bad_joint_states and s.state == PolicyStatus.STATE_STALE
            ),
            "STALE with more bad_joint_states",
            3.0,
            t2,
        )
        assert peer.enable(False).success
        time.sleep(1.0)
        trajectories = peer.trajectories_since(0.0)
        assert outside_limits(trajectories) == [], "a command outside the joint limits"
        assert node.running()


def test_measurement_just_outside_a_limit_holds_at_the_limit() -> None:
    # 0.1 beyond the upper limit, within max_jump: a measurement, but no command goes there.
    q = (3.0,) + Q[1:]
    held = (LIMIT,) + Q[1:]
    params = {"instruction": INSTRUCTION, "enabled_at_start": False, **TIGHT_LIMITS}
    with running(params) as (node, peer):
        start_constant(peer, node, q=q)
        assert peer.enable(True).success
        t0 = peer.mark()
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 6.0, t0)
        time.sleep(1.0)
        t1 = peer.mark()
        assert peer.enable(False).success
        wait_hold(peer, t1, held, "hold after ~/enable false", 2.0)
        trajectories = peer.trajectories_since(0.0)
        assert outside_limits(trajectories) == [], "a command outside the joint limits"
        assert status_now(peer).bad_joint_states == 0


@pytest.mark.parametrize("stream", ["joints", "exterior"])
def test_one_message_from_the_future_is_bad_input(stream: str) -> None:
    exp = expected()
    counter = "bad_joint_states" if stream == "joints" else "bad_images"
    calls = itertools.count()

    def future(now: Time) -> Time:
        # The first message after the reset is an hour ahead of the clock; the rest are on time.
        return time_of(stamp_seconds(now) + FUTURE_S) if next(calls) == 0 else now

    def joints(_index: int, now: Time) -> JointState:
        return joint_state(BUNDLE_JOINTS, Q, future(now))

    def frames(_index: int, now: Time) -> Image:
        m = raw_image(ext_image(), "rgb8", frame_id="exterior")
        m.header.stamp = future(now)
        return m

    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0)
        peer.pause(stream)
        time.sleep(0.1)
        assert peer.reset().success
        before = status_now(peer)
        if stream == "joints":
            peer.set_joints(joints, 100.0)
        else:
            peer.set_camera("exterior", frames, 30.0)
        t0 = peer.mark()
        peer.resume(stream)
        wait_status(
            peer,
            lambda s: getattr(s, counter) > getattr(before, counter),
            f"{counter} counted",
            3.0,
            t0,
        )
        # The messages after it are accepted: the node drives on them.
        t1 = peer.mark()
        wait_matching(peer, exp, t1)
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 3.0, t1)
        after = status_now(peer)
        assert getattr(after, counter) - getattr(before, counter) == 1, (before, after)

        # The future message froze nothing: when the input stops, it is stale, and the node holds.
        t2 = peer.mark()
        peer.pause(stream)
        s = wait_status(peer, lambda s: s.state == PolicyStatus.STATE_STALE, "STALE", 3.0, t2)
        assert s.state_name == "STALE"
        wait_hold(peer, t2, Q, f"hold when {stream} stopped")


def test_a_stray_tiny_frame_after_reset_does_not_lock_the_camera_size() -> None:
    exp = expected()
    calls = itertools.count()
    normal = raw_image(ext_image(), "rgb8", frame_id="exterior")
    tiny = raw_image(uniform_rgb(1, 1, (255, 0, 0)), "rgb8", frame_id="exterior")

    def first_tiny(_index: int, now: Time) -> Image:
        m = tiny if next(calls) == 0 else normal
        m.header.stamp = now
        return m

    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0)
        peer.pause("exterior")
        time.sleep(0.1)
        assert peer.reset().success
        peer.set_camera("exterior", first_tiny, 30.0)
        t = peer.mark()
        peer.resume("exterior")
        wait_matching(peer, exp, t, timeout=CHUNK_TIMEOUT)
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 3.0, t)
        assert next(calls) > 2, "the tiny frame was not followed by normal ones"


def test_use_sim_time_follows_clock() -> None:
    exp = expected()
    sim = SimClock(1000.0)
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, "use_sim_time": True}
    with peer_first(params, clock=sim.now_s) as (node, peer):
        start_constant(peer, node)
        # Inputs stamped in simulated time, but no /clock yet: the node's clock has not started.
        assert quiet(peer, peer.mark(), 2.0) == [], "commands before the first /clock"
        s = status_now(peer)
        assert s.state == PolicyStatus.STATE_WAITING, s

        peer.set_clock(100.0)
        t1 = peer.mark()
        wait_matching(peer, exp, t1, timeout=10.0)
        trajectories = [t for t in wait_trajectories(peer, t1, 2) if not is_hold(t)]
        for traj in trajectories:
            stamp = stamp_seconds(traj.header.stamp)
            # An observation stamp in simulated time (the frames'), nowhere near the system's.
            assert sim.start_s < stamp <= sim.now_s(), (stamp, sim.now_s())
            # Points timed from it in simulated time: the model's steps, 0.1 s apart.
            assert trajectory_error(traj, exp) < TOL, trajectory_arrays(traj)
        s = wait_status(
            peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 3.0, peer.mark()
        )
        assert abs(stamp_seconds(s.header.stamp) - sim.now_s()) < 5.0, s.header.stamp

        # /clock goes on while the inputs stop: stale, and a hold.
        t2 = peer.mark()
        peer.pause(*CAMERAS, "joints")
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_STALE, "STALE", 3.0, t2)
        hold = wait_hold(peer, t2, Q, "hold when the inputs stopped")
        assert abs(stamp_seconds(hold.header.stamp) - sim.now_s()) < 5.0, hold.header.stamp


def test_latched_instruction_published_before_the_node_starts() -> None:
    text = "Push the BLUE object, now!"
    exp = expected(instruction=text)
    assert np.abs(exp.actions - expected(instruction="").actions).max() > 1e-3
    latched = QoSProfile(
        depth=1,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
        reliability=ReliabilityPolicy.RELIABLE,
    )

    def latch(peer: Peer) -> None:
        # Published once, before the node exists; the publisher stays alive with the peer.
        pub = peer.node.create_publisher(String, "/instruction", latched)
        pub.publish(String(data=text))

    with peer_first({"enabled_at_start": True}, before_node=latch) as (node, peer):
        assert "instruction" not in node.params
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0, timeout=10.0)
        assert status_now(peer).bad_instructions == 0


def test_no_joint_limits_refuses_to_start() -> None:
    params: dict[str, Any] = {**PeerTopics().node_params(), **NO_LIMITS}
    with NodeProcess(params, next_domain(), binary=NODE_BIN) as node:
        assert not any(k.startswith("joint_limits.") for k in node.params), node.params
        assert "robot_description" not in node.params
        code = node.wait(20.0)
        assert code != 0
        assert "joint_limits" in node.stderr and "dry_run" in node.stderr, node.stderr_tail()


def test_dry_run_needs_no_joint_limits() -> None:
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, "dry_run": True, **NO_LIMITS}
    exp = expected()
    with running(params) as (node, peer):
        assert not any(k.startswith("joint_limits.") for k in node.params), node.params
        rec = Recorder(peer, JointTrajectory, "/wam_policy/dry_run/trajectory")
        start_constant(peer, node)
        got = rec.wait(2, timeout=10.0)
        assert trajectory_error(got[-1][1], exp) < TOL
        assert peer.trajectories_since() == [], "a dry run reached the command topic"
        assert status_now(peer).dry_run


RECORDED_INPUTS = (
    "/cameras/exterior/image_raw",
    "/cameras/wrist/image_raw",
    "/joint_states",
    "/instruction",
)
RECORDED_OUTPUTS = ("/joint_trajectory", "/wam_policy/action_chunk", "/wam_policy/status")


def read_mcap(path: Path) -> dict[str, list[Any]]:
    """Every message of an MCAP file, decoded by the mcap_ros2 decoder, per topic in file order."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list[Any]] = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, _message, decoded in reader.iter_decoded_messages(
            log_time_order=False
        ):
            out[channel.topic].append(decoded)
    return dict(out)


def trajectory_key(t: Any) -> tuple[Any, ...]:
    """What a trajectory commands, comparable between rclpy and mcap_ros2 messages."""
    return (
        int(t.header.stamp.sec),
        int(t.header.stamp.nanosec),
        tuple(t.joint_names),
        tuple(
            (
                tuple(float(x) for x in p.positions),
                tuple(float(x) for x in p.velocities),
                int(p.time_from_start.sec),
                int(p.time_from_start.nanosec),
            )
            for p in t.points
        ),
    )


def replay(path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``wam_policy_node replay <path> args...`` in a domain of its own."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(next_domain())
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [str(NODE_BIN), "replay", str(path), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_record_then_replay(tmp_path: Path) -> None:
    path = tmp_path / "run.mcap"
    exp = expected()
    params = {"enabled_at_start": False, "record_path": str(path)}
    with running(params) as (node, peer):
        # Enabled once the graph is connected, so that the peer receives every command.
        peer.set_instruction(INSTRUCTION)
        start_constant(peer, node)
        time.sleep(0.5)
        assert peer.enable(True).success
        wait_matching(peer, exp, 0.0)
        assert peer.wait_for(lambda: len(peer.chunks_since()) >= 3, 10.0), "fewer than 3 chunks"
        t = peer.mark()
        assert peer.enable(False).success
        wait_hold(peer, t, Q, "hold after ~/enable false", 2.0)
        time.sleep(0.3)
        # A run-time parameter change is a decision point too: replay must make it at the same time.
        params_client = ParamClient(peer.node)
        assert params_client.set_one("velocity_scaling", 0.5).successful
        t = peer.mark()
        assert peer.enable(True).success
        assert peer.wait_for(lambda: len(peer.chunks_since(t)) >= 2, 10.0), "no chunks again"
        last = wait_status(
            peer, lambda s: s.recorded_messages > 0, "recorded_messages > 0", 3.0, peer.mark()
        )
        assert node.pid is not None
        os.kill(node.pid, signal.SIGINT)
        code = wait_exit(node, 10.0)
        assert code == 0, f"exit status {code} after SIGINT"
        time.sleep(0.5)
        with peer.lock:
            received = [trajectory_key(r.msg) for r in peer.trajectories]

    # (a) An independent reader opens it: inputs and outputs, every message decoded.
    topics = read_mcap(path)
    for topic in RECORDED_INPUTS + RECORDED_OUTPUTS:
        assert topics.get(topic), f"no {topic} in the recording: {sorted(topics)}"
    total = sum(len(v) for v in topics.values())
    assert total >= last.recorded_messages, (total, last.recorded_messages)
    assert any(m.data == INSTRUCTION for m in topics["/instruction"])
    js = topics["/joint_states"][0]
    assert list(js.name) == list(BUNDLE_JOINTS) and list(js.position) == list(Q)
    for cam, image in zip(CAMERAS, (ext_image(), wrist_image())):
        frame = topics[f"/cameras/{cam}/image_raw"][0]
        assert (frame.width, frame.height, frame.encoding) == (32, 32, "rgb8"), cam
        assert bytes(frame.data) == image.tobytes(), cam
    names = {m.state_name for m in topics["/wam_policy/status"]}
    assert names <= STATE_NAMES and {"RUNNING", "DISABLED"} <= names, names
    # The commands in the file are the ones the peer received, in order.
    recorded = [trajectory_key(m) for m in topics["/joint_trajectory"]]
    assert recorded == received, (len(recorded), len(received), last.record_dropped)
    chunks = topics["/wam_policy/action_chunk"]
    ids = [c.chunk_id for c in chunks]
    assert ids == sorted(ids) and len(chunks) >= 5, ids
    assert all(trajectory_key(c.trajectory) in set(recorded) for c in chunks)

    # (b) Replaying it gives the same commands.
    proc = replay(path, tmp_path)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    lines = [line for line in proc.stdout.splitlines() if "identical" in line]
    assert lines and not any("not identical" in line for line in lines), output

    # (c) A replay that commands otherwise is refused. Not with another seed: the test bundle's
    # sampler lands on the same actions whatever its noise. A max_jump no chunk can meet refuses
    # every chunk, so the replayed commands are holds where the recording has trajectories.
    proc = replay(path, tmp_path, "--param", "joint_limits.max_jump=0.001")
    output = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode != 0, output
    assert "differ" in proc.stdout + proc.stderr, output
