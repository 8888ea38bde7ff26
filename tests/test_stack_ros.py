"""Issue 12's interfaces on a real ROS 2 graph: the node binary against an rclpy peer.

The ``~/run`` action (goals open the command gate; time budget, cancel, preemption, rejection,
stale inputs, ``gated``, the client watchdog; every end is a hold at the measured position), the
lifecycle of a ``managed`` node (transitions, events, a failed configure and its repair), the
parameter services (list, describe, get, validated set, ``velocity_scaling``), command groups (an
arm in chunk mode, a gripper in stream mode), two nodes in namespaces of their own,
``~/planned_path`` from a URDF, and the topics that config/wam_policy.rviz displays.

Needs the environment of scripts/env.sh and a built node (WAM_NODE_BIN, default
target/release/wam_policy_node); the peer and the helpers are those of test_node_ros and
test_controller_ros, the clients those of tests/wam_peer/stack.py. Domains as in test_node_ros
(WAM_TEST_DOMAIN_BASE). Waits are bounded and generous: nothing here is a claim about speed.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.msg", reason="needs the package's messages: source scripts/env.sh")
pytest.importorskip("wam_policy.action", reason="needs the Run action: source scripts/env.sh")

import yaml  # noqa: E402
from action_msgs.msg import GoalStatus  # noqa: E402
from action_msgs.srv import CancelGoal  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from test_controller_ros import (  # noqa: E402
    HOLD_TOL,
    SLOW_LATENCY_S,
    STATE_NAMES,
    expected,
    is_hold,
    wait_chunk_after,
    wait_hold,
)
from test_node_ros import (  # noqa: E402
    CAMERAS,
    INSTRUCTION,
    NODE_BIN,
    REPO,
    TOL,
    Q,
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
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402
from wam_peer import (  # noqa: E402
    ACTION_DT,
    BUNDLE_JOINTS,
    TEST_BUNDLE,
    NodeProcess,
    Peer,
    trajectory_arrays,
    trajectory_error,
)
from wam_peer.stack import (  # noqa: E402
    ANY_RELIABILITY,
    LEASE_S,
    ExternalRunClient,
    LifecycleClient,
    ParamClient,
    RunClient,
    RunEnd,
    TopicLog,
    namespaced_topics,
    relative_topic_params,
)
from wam_policy.action import Run  # noqa: E402
from wam_policy.msg import PolicyStatus  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

# An instruction whose actions differ from INSTRUCTION's (test_node_ros checks the token ids).
SECOND = "Push the BLUE object, now!"
# Waiting only: a goal's end once its cause happened, a chunk, the first commands after a start.
END_TIMEOUT = 10.0
FIRST_CHUNK_TIMEOUT = 15.0
# After a hold, how long nothing but holds may arrive: longer than a slow inference (0.5 s), so that
# a chunk whose inference was in flight at the end would have landed.
AFTER_HOLD_WINDOW = 1.5
RESULT = Run.Result


def outcome_is(end: RunEnd, outcome: int, name: str, status: int) -> None:
    assert end.result.outcome == outcome, str(end)
    assert end.result.outcome_name == name, str(end)
    assert end.status == status, str(end)


def wait_final_hold(
    peer: Peer,
    since: float,
    q: Sequence[float],
    what: str,
    timeout: float = 5.0,
    window: float = AFTER_HOLD_WINDOW,
) -> JointTrajectory:
    """The first hold at ``q`` received after ``since``; for ``window`` seconds after it nothing
    but holds arrives (no chunk computed before the end is commanded after it)."""
    hold = wait_hold(peer, since, q, what, timeout)
    with peer.lock:
        at = next(r.at for r in peer.trajectories if r.msg is hold)
    time.sleep(window)
    after = [t for t in peer.trajectories_since(at) if t is not hold and not is_hold(t)]
    assert after == [], (
        f"{what}: {len(after)} trajectories after the hold, stamped "
        f"{[t.header.stamp.sec + t.header.stamp.nanosec * 1e-9 for t in after]}"
    )
    return hold


def wait_gate_closed(peer: Peer, since: float, what: str) -> PolicyStatus:
    return wait_status(peer, lambda s: not s.enabled, f"gate closed ({what})", 3.0, since)


def feedback_states(goal: Any) -> list[tuple[str, int]]:
    return [(f.state, f.chunks) for f in goal.feedback_since()]


@contextmanager
def with_run(
    params: Mapping[str, Any],
) -> Iterator[tuple[NodeProcess, Peer, RunClient]]:
    """The node (gate closed, no instruction unless ``params`` set one), a fed peer and a ~/run
    client on the peer's node."""
    with running(params) as (node, peer):
        run = RunClient(peer.node)
        start_constant(peer, node)
        assert run.wait_for_server(15.0), "no ~/run action server"
        yield node, peer, run


# -------------------------------------------------------------------------------------------------
# ~/run


def test_goal_sets_the_instruction_opens_the_gate_and_reports_feedback() -> None:
    exp = expected(instruction=SECOND)
    with with_run({}) as (node, peer, run):
        assert quiet(peer, 0.0, 1.0) == [], "commands before any goal"
        assert not status_now(peer).enabled
        t0 = peer.mark()
        goal = run.send(SECOND)
        assert goal.accepted, "goal rejected"
        # The goal's instruction drives the model.
        wait_matching(peer, exp, t0, timeout=FIRST_CHUNK_TIMEOUT)
        wait_status(
            peer, lambda s: s.enabled and s.state == PolicyStatus.STATE_RUNNING, "RUNNING", 3.0, t0
        )
        fb = goal.wait_feedback(lambda f: f.state == "RUNNING" and f.chunks >= 1, 5.0)
        assert fb is not None, f"no RUNNING feedback with chunks: {feedback_states(goal)}"
        assert fb.elapsed_s > 0.0 and fb.latency_s > 0.0, fb
        assert math.isinf(fb.remaining_s) and fb.remaining_s > 0, "no budget: remaining_s is inf"
        # Feedback keeps coming while the goal is active (every status_period_s, 0.1 s).
        t1 = peer.mark()
        time.sleep(1.0)
        assert len(goal.feedback_since(t1)) >= 3, feedback_states(goal)
        states = {f.state for f in goal.feedback_since()}
        assert states <= STATE_NAMES, states
        chunks = [f.chunks for f in goal.feedback_since()]
        assert chunks == sorted(chunks), chunks
        elapsed = [f.elapsed_s for f in goal.feedback_since()]
        assert elapsed == sorted(elapsed), elapsed
        assert not goal.done(), "the goal ended by itself"
        assert goal.cancel().return_code == CancelGoal.Response.ERROR_NONE
        end = goal.result(END_TIMEOUT)
        assert end.result.chunks >= 1, str(end)
        assert node.running()


@pytest.mark.parametrize("succeed", [True, False], ids=["succeed_on_timeout", "abort_on_timeout"])
def test_time_budget_ends_in_timeout_and_a_hold(succeed: bool) -> None:
    budget = 2.0
    with with_run({}) as (node, peer, run):
        t0 = peer.mark()
        goal = run.send(INSTRUCTION, time_budget_s=budget, succeed_on_timeout=succeed)
        assert goal.accepted
        wait_chunk_after(peer, t0, FIRST_CHUNK_TIMEOUT)
        fb = goal.wait_feedback(lambda f: 0.0 < f.remaining_s <= budget, 5.0)
        assert fb is not None, f"no feedback with the budget's remaining_s: {feedback_states(goal)}"
        end = goal.result(budget + END_TIMEOUT)
        status = GoalStatus.STATUS_SUCCEEDED if succeed else GoalStatus.STATUS_ABORTED
        outcome_is(end, RESULT.OUTCOME_TIMEOUT, "TIMEOUT", status)
        assert end.result.elapsed_s >= budget - 0.05, str(end)
        assert end.result.chunks >= 1, str(end)
        # Every end closes the gate with a hold at the measured position.
        t_end = peer.mark()
        wait_final_hold(peer, t0, Q, "hold at the end of the time budget")
        wait_gate_closed(peer, t_end, "after TIMEOUT")
        assert node.running()


def test_cancel_during_a_slow_inference_holds_and_discards_its_chunk() -> None:
    with with_run({"debug_extra_latency_s": SLOW_LATENCY_S}) as (node, peer, run):
        goal = run.send(INSTRUCTION)
        assert goal.accepted
        wait_chunk_after(peer, 0.0, FIRST_CHUNK_TIMEOUT)
        # Right after a chunk arrives, the next inference has just started (0.5 s long).
        wait_chunk_after(peer, peer.mark())
        mark = peer.mark()
        response = goal.cancel()
        assert response.return_code == CancelGoal.Response.ERROR_NONE, response
        assert len(response.goals_canceling) == 1, response
        end = goal.result(END_TIMEOUT)
        outcome_is(end, RESULT.OUTCOME_CANCELED, "CANCELED", GoalStatus.STATUS_CANCELED)
        wait_final_hold(peer, mark, Q, "hold after the cancel")
        wait_status(
            peer,
            lambda s: not s.enabled and s.discarded_chunks >= 1,
            "gate closed with discarded_chunks >= 1",
            3.0,
            mark,
        )
        assert node.running()


def test_second_goal_preempts_the_first_during_a_slow_inference() -> None:
    first_exp, second_exp = expected(), expected(instruction=SECOND)
    with with_run({"debug_extra_latency_s": SLOW_LATENCY_S}) as (node, peer, run):
        first = run.send(INSTRUCTION)
        assert first.accepted
        wait_matching(peer, first_exp, 0.0, timeout=FIRST_CHUNK_TIMEOUT)
        wait_chunk_after(peer, peer.mark())
        # An inference of the first goal is in flight.
        second = run.send(SECOND)
        assert second.accepted, "run_preemption defaults to preempt"
        mark = peer.mark()
        end = first.result(END_TIMEOUT)
        outcome_is(end, RESULT.OUTCOME_PREEMPTED, "PREEMPTED", GoalStatus.STATUS_ABORTED)
        # The second goal runs with its instruction ...
        wait_matching(peer, second_exp, mark, timeout=FIRST_CHUNK_TIMEOUT)
        time.sleep(2 * SLOW_LATENCY_S)
        # ... and no chunk of the first goal (its instruction) was commanded after the preemption.
        for traj in peer.trajectories_since(mark):
            if not is_hold(traj):
                assert trajectory_error(traj, second_exp) < TOL, (
                    "a trajectory after the preemption is not the second goal's "
                    f"(error vs first goal: {trajectory_error(traj, first_exp):.3g})"
                )
        assert not second.done(), "the second goal ended"
        fb = second.wait_feedback(lambda f: f.state == "RUNNING", 5.0)
        assert fb is not None, feedback_states(second)
        assert status_now(peer).enabled
        assert second.cancel().return_code == CancelGoal.Response.ERROR_NONE
        assert node.running()


def test_run_preemption_reject_refuses_a_second_goal() -> None:
    exp = expected()
    with with_run({"run_preemption": "reject"}) as (node, peer, run):
        first = run.send(INSTRUCTION)
        assert first.accepted
        wait_matching(peer, exp, 0.0, timeout=FIRST_CHUNK_TIMEOUT)
        second = run.send(SECOND)
        assert not second.accepted, "a second goal was accepted with run_preemption: reject"
        # The first goal goes on, with its own instruction.
        mark = peer.mark()
        wait_matching(peer, exp, mark)
        assert not first.done(), "the first goal ended"
        assert first.wait_feedback(lambda f: f.state == "RUNNING", 5.0, since=mark) is not None
        for traj in peer.trajectories_since(mark):
            assert is_hold(traj) or trajectory_error(traj, exp) < TOL
        first.cancel()
        end = first.result(END_TIMEOUT)
        outcome_is(end, RESULT.OUTCOME_CANCELED, "CANCELED", GoalStatus.STATUS_CANCELED)
        assert node.running()


def test_gated_commands_flow_only_during_a_goal() -> None:
    exp = expected()
    with with_run({"gated": True, "instruction": INSTRUCTION}) as (node, peer, run):
        response = peer.enable(True)
        assert not response.success, "~/enable true accepted with gated: true"
        assert "run" in response.message, response.message
        assert quiet(peer, 0.0, 2.0) == [], "commands without a goal"
        assert not status_now(peer).enabled

        t0 = peer.mark()
        goal = run.send(INSTRUCTION)
        assert goal.accepted
        wait_matching(peer, exp, t0, timeout=FIRST_CHUNK_TIMEOUT)

        # ~/enable false still closes the gate: the goal ends CANCELED (goal ABORTED), with a hold.
        t1 = peer.mark()
        assert peer.enable(False).success
        end = goal.result(END_TIMEOUT)
        outcome_is(end, RESULT.OUTCOME_CANCELED, "CANCELED", GoalStatus.STATUS_ABORTED)
        wait_final_hold(peer, t1, Q, "hold after ~/enable false")
        wait_gate_closed(peer, t1, "after ~/enable false")

        # Without a goal the gate stays closed.
        assert not peer.enable(True).success
        assert quiet(peer, peer.mark(), 1.5) == [], "commands without a goal"
        assert node.running()


def test_stale_inputs_end_the_goal() -> None:
    with with_run({}) as (node, peer, run):
        t0 = peer.mark()
        goal = run.send(INSTRUCTION, stale_tolerance_s=0.5)
        assert goal.accepted
        wait_chunk_after(peer, t0, FIRST_CHUNK_TIMEOUT)
        mark = peer.mark()
        peer.pause(*CAMERAS)
        end = goal.result(END_TIMEOUT)
        outcome_is(end, RESULT.OUTCOME_STALE_INPUTS, "STALE_INPUTS", GoalStatus.STATUS_ABORTED)
        wait_hold(peer, mark, Q, "hold when the cameras stopped")
        wait_gate_closed(peer, mark, "after STALE_INPUTS")
        assert node.running()


def test_watchdog_ends_the_goal_of_a_killed_client() -> None:
    watchdog_s = 1.0
    with running({"run_watchdog_s": watchdog_s}) as (node, peer):
        # No action client in this process: the only one is the child's.
        start_constant(peer, node)
        with ExternalRunClient(peer.domain_id, INSTRUCTION) as client:
            word = client.wait_line(["accepted", "rejected", "no-server"], 45.0)
            assert word == "accepted", f"client: {word}; output:\n{client.output()}"
            wait_trajectories(peer, 0.0, 2, FIRST_CHUNK_TIMEOUT)
            # A live client keeps the goal: longer than the watchdog, still driving.
            time.sleep(2 * watchdog_s)
            s = status_now(peer)
            assert s.enabled, "the gate closed while the client was alive"
            mark = peer.mark()
            client.kill()
            # The client's participant leaves the graph after its lease (LEASE_S), then the
            # watchdog runs out; generous margin.
            timeout = LEASE_S + watchdog_s + 10.0
            wait_hold(peer, mark, Q, "hold after the client was killed", timeout)
            wait_gate_closed(peer, mark, "after the watchdog")
        assert node.running()


# -------------------------------------------------------------------------------------------------
# Lifecycle

UNCONFIGURED = State.PRIMARY_STATE_UNCONFIGURED
INACTIVE = State.PRIMARY_STATE_INACTIVE
ACTIVE = State.PRIMARY_STATE_ACTIVE
FINALIZED = State.PRIMARY_STATE_FINALIZED
CONFIGURING = State.TRANSITION_STATE_CONFIGURING
CLEANINGUP = State.TRANSITION_STATE_CLEANINGUP
SHUTTINGDOWN = State.TRANSITION_STATE_SHUTTINGDOWN
ACTIVATING = State.TRANSITION_STATE_ACTIVATING
DEACTIVATING = State.TRANSITION_STATE_DEACTIVATING
ERRORPROCESSING = State.TRANSITION_STATE_ERRORPROCESSING
LIFECYCLE_SERVICES = (
    "change_state",
    "get_state",
    "get_available_states",
    "get_available_transitions",
)


@contextmanager
def managed(
    params: Mapping[str, Any],
) -> Iterator[tuple[NodeProcess, Peer, LifecycleClient]]:
    """A managed node (instruction set, gate closed) and a peer that feeds it from the start."""
    with running({"managed": True, "instruction": INSTRUCTION, **params}) as (node, peer):
        lc = LifecycleClient(peer.node)
        peer.feed_constant({"exterior": ext_image(), "wrist": wrist_image()}, Q, BUNDLE_JOINTS)
        assert lc.wait_ready(30.0), "no lifecycle services / transition events"
        yield node, peer, lc


def check_state(lc: LifecycleClient, state_id: int) -> None:
    s = lc.state()
    assert s.id == state_id, f"state {s.id} ({s.label}), expected {state_id}"


def transition(lc: LifecycleClient, tid: int, path: Sequence[tuple[int, int]], goal: int) -> None:
    """Triggers ``tid``: success, the events of ``path`` and the state ``goal``."""
    t = time.monotonic()
    assert lc.change(tid), f"transition {tid} refused"
    got = lc.wait_path(path, t)
    assert got == list(path), f"transition {tid}: events {got}, expected {list(path)}"
    check_state(lc, goal)


def test_lifecycle_transitions() -> None:
    exp = expected()
    with managed({}) as (node, peer, lc):
        s = lc.state()
        assert (s.id, s.label) == (UNCONFIGURED, "unconfigured"), s
        states = {st.id for st in lc.available_states()}
        want = {UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED}
        want |= {CONFIGURING, CLEANINGUP, SHUTTINGDOWN, ACTIVATING, DEACTIVATING, ERRORPROCESSING}
        assert want <= states, sorted(states)
        transitions = {t.transition.id for t in lc.available_transitions()}
        assert {Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN} <= (
            transitions
        ), sorted(transitions)
        assert Transition.TRANSITION_ACTIVATE not in transitions, sorted(transitions)
        # Unconfigured: no model, no status, no commands.
        time.sleep(1.0)
        assert peer.statuses_since() == [], "~/status before configure"
        assert peer.trajectories_since() == []

        # An invalid transition is refused and changes nothing.
        t = time.monotonic()
        assert not lc.change(Transition.TRANSITION_ACTIVATE), "activate while unconfigured"
        check_state(lc, UNCONFIGURED)
        assert lc.path_since(t) == []

        transition(lc, Transition.TRANSITION_CONFIGURE, [(1, 10), (10, 2)], INACTIVE)
        assert peer.wait_for_node(15.0), "configured, but no status or subscriptions"
        assert quiet(peer, peer.mark(), 1.5) == [], "commands while inactive"
        assert not status_now(peer).enabled

        t = peer.mark()
        transition(lc, Transition.TRANSITION_ACTIVATE, [(2, 13), (13, 3)], ACTIVE)
        wait_matching(peer, exp, t, timeout=FIRST_CHUNK_TIMEOUT)
        wait_status(peer, lambda s: s.enabled, "enabled", 3.0, t)

        t = peer.mark()
        transition(lc, Transition.TRANSITION_DEACTIVATE, [(3, 14), (14, 2)], INACTIVE)
        wait_final_hold(peer, t, Q, "hold on deactivate")
        wait_gate_closed(peer, t, "inactive")

        transition(lc, Transition.TRANSITION_CLEANUP, [(2, 11), (11, 1)], UNCONFIGURED)
        transition(lc, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, [(1, 12), (12, 4)], FINALIZED)
        time.sleep(0.5)
        assert node.running(), "the process ends only when signalled"
        assert not lc.change(Transition.TRANSITION_CONFIGURE), "configure after shutdown"
        check_state(lc, FINALIZED)


def test_lifecycle_shutdown_while_active_holds_first() -> None:
    with managed({}) as (node, peer, lc):
        transition(lc, Transition.TRANSITION_CONFIGURE, [(1, 10), (10, 2)], INACTIVE)
        t = peer.mark()
        transition(lc, Transition.TRANSITION_ACTIVATE, [(2, 13), (13, 3)], ACTIVE)
        wait_trajectories(peer, t, 2, FIRST_CHUNK_TIMEOUT)
        t = peer.mark()
        transition(lc, Transition.TRANSITION_ACTIVE_SHUTDOWN, [(3, 12), (12, 4)], FINALIZED)
        wait_final_hold(peer, t, Q, "hold on shutdown")
        assert node.running()


def test_lifecycle_failed_configure_then_fixed_bundle(tmp_path: Path) -> None:
    empty = tmp_path / "no_bundle"
    empty.mkdir()
    with managed({"bundle_path": str(empty)}) as (node, peer, lc):
        params = ParamClient(peer.node)
        check_state(lc, UNCONFIGURED)
        t = time.monotonic()
        assert not lc.change(Transition.TRANSITION_CONFIGURE), "configured without a bundle"
        path = [(UNCONFIGURED, CONFIGURING), (CONFIGURING, ERRORPROCESSING)]
        path += [(ERRORPROCESSING, UNCONFIGURED)]
        got = lc.wait_path(path, t)
        assert got == path, got
        check_state(lc, UNCONFIGURED)
        assert node.running()

        # Unconfigured: every parameter may be set, bundle_path included.
        result = params.set_one("bundle_path", str(TEST_BUNDLE))
        assert result.successful, result.reason
        assert params.get(["bundle_path"]) == [str(TEST_BUNDLE)]
        transition(lc, Transition.TRANSITION_CONFIGURE, [(1, 10), (10, 2)], INACTIVE)
        assert peer.wait_for_node(15.0)


def test_unmanaged_node_serves_no_lifecycle_services() -> None:
    with running({"instruction": INSTRUCTION}) as (node, peer):
        start_constant(peer, node)

        def services() -> set[str] | None:
            names = {n for n, _ in peer.node.get_service_names_and_types()}
            wanted = {"/wam_policy/enable", "/wam_policy/get_parameters"}
            return names if wanted <= names else None

        names = peer.wait_for(services, 10.0)
        assert names is not None, "the node's services were not discovered"
        for srv in LIFECYCLE_SERVICES:
            assert f"/wam_policy/{srv}" not in names, srv
        assert node.running()


# -------------------------------------------------------------------------------------------------
# Parameters

SETTABLE = (
    "instruction",
    "boundary_mode",
    "crossfade_steps",
    "replan_margin_s",
    "replan_threshold_s",
    "min_lead_s",
    "ramp_in_s",
    "velocity_scaling",
    "dry_run",
    "status_period_s",
    "run_preemption",
    "run_watchdog_s",
    "run_stale_tolerance_s",
)
READ_ONLY = ("bundle_path", "camera_topics", "joint_names", "providers", "managed")


def test_parameters_are_listed_described_and_typed() -> None:
    with running({"instruction": INSTRUCTION}) as (node, peer):
        params = ParamClient(peer.node)
        start_constant(peer, node)
        names = params.list()
        for name in (*SETTABLE, *READ_ONLY, "gated"):
            assert name in names, f"{name} not listed: {sorted(names)}"
        described = params.describe([*SETTABLE, *READ_ONLY])
        for d, name in zip(described, [*SETTABLE, *READ_ONLY]):
            assert d.name == name, (d.name, name)
            assert d.description.strip(), f"{name}: no description"
            assert d.read_only == (name in READ_ONLY), f"{name}: read_only {d.read_only}"
        types = params.types(["boundary_mode", "velocity_scaling", "gated", "crossfade_steps"])
        assert types == [
            ParameterType.PARAMETER_STRING,
            ParameterType.PARAMETER_DOUBLE,
            ParameterType.PARAMETER_BOOL,
            ParameterType.PARAMETER_INTEGER,
        ], types
        assert params.get(["boundary_mode", "bundle_path", "instruction"]) == [
            "replace",
            str(TEST_BUNDLE),
            INSTRUCTION,
        ]
        assert node.running()


def test_set_parameters_validates_and_announces() -> None:
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        params = ParamClient(peer.node)
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, FIRST_CHUNK_TIMEOUT)

        t = peer.mark()
        result = params.set_one("boundary_mode", "crossfade")
        assert result.successful, result.reason
        assert params.get(["boundary_mode"]) == ["crossfade"]
        announced = peer.wait_for(lambda: params.changed_since(t).get("boundary_mode"), 5.0)
        assert announced == "crossfade", f"/parameter_events: {params.changed_since(t)}"
        wait_status(peer, lambda s: s.boundary_mode == "crossfade", "crossfade in status", 5.0, t)

        # Bad values are refused naming the parameter; the old value stays.
        result = params.set_one("boundary_mode", "bogus")
        assert not result.successful and "boundary_mode" in result.reason, result.reason
        result = params.set_one("replan_margin_s", -1.0)
        assert not result.successful and "replan_margin_s" in result.reason, result.reason
        result = params.set_one("boundary_mode", 3)
        assert not result.successful, "an integer boundary_mode"
        assert params.get(["boundary_mode"]) == ["crossfade"]

        # Read-only while running.
        result = params.set_one("bundle_path", "/tmp/elsewhere")
        assert not result.successful and "read-only" in result.reason, result.reason
        assert params.get(["bundle_path"]) == [str(TEST_BUNDLE)]

        # Atomically: all or nothing.
        (steps,) = params.get(["crossfade_steps"])
        result = params.set_atomically({"crossfade_steps": steps + 1, "boundary_mode": "bogus"})
        assert not result.successful, "an atomic set with a bad value"
        assert params.get(["crossfade_steps", "boundary_mode"]) == [steps, "crossfade"]
        result = params.set_atomically({"crossfade_steps": steps + 1, "boundary_mode": "prefix"})
        assert result.successful, result.reason
        assert params.get(["crossfade_steps", "boundary_mode"]) == [steps + 1, "prefix"]
        assert node.running()


def point_times(traj: JointTrajectory) -> list[float]:
    return [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in traj.points]


def spaced(traj: JointTrajectory, dt: float) -> bool:
    """``traj`` has points ``dt`` apart (at least two)."""
    times = point_times(traj)
    return len(times) >= 2 and bool(np.allclose(np.diff(times), dt, rtol=0.0, atol=1e-6))


def test_velocity_scaling_stretches_new_chunks() -> None:
    exp = expected()
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        params = ParamClient(peer.node)
        start_constant(peer, node)
        before = [t for t in wait_trajectories(peer, 0.0, 2, FIRST_CHUNK_TIMEOUT) if not is_hold(t)]
        assert before, "no chunk"
        assert all(spaced(t, ACTION_DT) for t in before), [point_times(t) for t in before]

        t = peer.mark()
        result = params.set_one("velocity_scaling", 0.5)
        assert result.successful, result.reason
        slow = 2 * ACTION_DT

        def first_slow() -> JointTrajectory | None:
            for traj in peer.trajectories_since(t):
                if spaced(traj, slow):
                    return traj
            return None

        traj = peer.wait_for(first_slow, 10.0)
        assert traj is not None, [point_times(x) for x in peer.trajectories_since(t)]
        with peer.lock:
            at = next(r.at for r in peer.trajectories if r.msg is traj)
        # From then on, every chunk is stretched.
        later = wait_trajectories(peer, at, 3, 10.0)
        for x in later:
            assert is_hold(x) or spaced(x, slow), point_times(x)
        # The same positions, twice as slow: step k at (k + 1) * 2 dt, velocities halved.
        times = np.asarray(point_times(traj))
        steps = [int(round(x / slow)) - 1 for x in times]
        _, pos, vel = trajectory_arrays(traj)
        assert np.abs(pos - exp.actions[steps]).max() < TOL, (pos, exp.actions)
        assert np.abs(vel[1:] - 0.5 * exp.velocities[steps][1:]).max() < TOL, vel
        assert node.running()


# -------------------------------------------------------------------------------------------------
# Command groups

ARM_JOINTS = list(BUNDLE_JOINTS[:-1])
GRIPPER_JOINT = BUNDLE_JOINTS[-1]
ARM_TOPIC = "/arm_controller/joint_trajectory"
GRIPPER_TOPIC = "/gripper_controller/commands"
GROUP_PARAMS: dict[str, Any] = {
    "command_groups": ["arm", "gripper"],
    "command_group.arm.joints": ARM_JOINTS,
    "command_group.arm.output_mode": "chunk",
    "command_group.arm.topic": ARM_TOPIC.lstrip("/"),
    "command_group.gripper.joints": [GRIPPER_JOINT],
    "command_group.gripper.output_mode": "stream",
    "command_group.gripper.topic": GRIPPER_TOPIC.lstrip("/"),
    "command_group.gripper.stream_message": "float64_multi_array",
    "stream_rate_hz": 100.0,
}


def test_command_groups_split_the_joints_and_hold_together() -> None:
    exp = expected()
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, **GROUP_PARAMS}
    with running(params) as (node, peer):
        arm = TopicLog(peer.node, JointTrajectory, ARM_TOPIC)
        gripper = TopicLog(peer.node, Float64MultiArray, GRIPPER_TOPIC)
        start_constant(peer, node)
        arm.wait_count(3, timeout=FIRST_CHUNK_TIMEOUT)
        chunks = [t for t in arm.since() if not is_hold(t)]
        assert chunks, "no arm chunk"
        for traj in chunks:
            assert list(traj.joint_names) == ARM_JOINTS, traj.joint_names
            steps, pos, _ = trajectory_arrays(traj)
            assert pos.shape == (len(steps), len(ARM_JOINTS)), pos.shape
            assert np.abs(pos - exp.actions[steps][:, :-1]).max() < TOL, (pos, exp.actions)
        setpoints = gripper.wait_count(20, timeout=10.0)
        assert all(len(m.data) == 1 for m in setpoints), {len(m.data) for m in setpoints}
        assert np.isfinite([m.data[0] for m in setpoints]).all()
        assert peer.trajectories_since() == [], "commands on trajectory_topic beside the groups"

        # ~/enable false: a hold for every group.
        t = peer.mark()
        assert peer.enable(False).success
        hold = arm.wait_for(lambda m: is_hold(m), 3.0, since=t)
        assert hold is not None, "no arm hold"
        assert list(hold.joint_names) == ARM_JOINTS
        assert np.allclose(hold.points[0].positions, Q[:-1], rtol=0.0, atol=HOLD_TOL)
        time.sleep(0.5)
        after = gripper.since(t)
        assert after, "no gripper setpoint after ~/enable false"
        assert abs(after[-1].data[0] - Q[-1]) <= HOLD_TOL, list(after[-1].data)
        quiet_from = peer.mark()
        time.sleep(0.5)
        assert gripper.since(quiet_from) == [], "gripper setpoints after the hold"
        assert [x for x in arm.since(quiet_from) if not is_hold(x)] == []
        assert node.running()


# -------------------------------------------------------------------------------------------------
# Namespaces


def test_two_namespaced_nodes_are_independent() -> None:
    domain = next_domain()
    qs = {"/arm1": Q, "/arm2": tuple(x + 0.1 for x in Q)}
    exps = {ns: expected(q) for ns, q in qs.items()}
    assert np.abs(exps["/arm1"].actions - exps["/arm2"].actions).max() > 1e-3
    params = {
        "instruction": INSTRUCTION,
        "enabled_at_start": True,
        "boundary_mode": "replace",
        "ramp_in_s": 0.0,
        "plan_anchor": "measured",
        **relative_topic_params(CAMERAS),
    }
    with ExitStack() as stack:
        nodes = {
            ns: stack.enter_context(NodeProcess(params, domain, binary=NODE_BIN, namespace=ns))
            for ns in qs
        }
        try:
            peers = {
                ns: stack.enter_context(
                    Peer(domain, namespaced_topics(ns, CAMERAS), name=f"peer_{ns.strip('/')}")
                )
                for ns in qs
            }
            for ns, q in qs.items():
                start_constant(peers[ns], nodes[ns], q=q)
            for ns in qs:
                wait_matching(peers[ns], exps[ns], 0.0, timeout=FIRST_CHUNK_TIMEOUT)
                # Every chunk of a node starts from its own robot's positions.
                for traj in peers[ns].trajectories_since():
                    assert is_hold(traj) or trajectory_error(traj, exps[ns]) < TOL, ns
            topics = {n for n, _ in peers["/arm1"].node.get_topic_names_and_types()}
            for ns in qs:
                for name in ("wam_policy/status", "joint_trajectory", "wam_policy/action_chunk"):
                    assert f"{ns}/{name}" in topics, (f"{ns}/{name}", sorted(topics))
            assert "/wam_policy/status" not in topics and "/joint_trajectory" not in topics

            # Disabling one leaves the other driving.
            t = peers["/arm1"].mark()
            assert peers["/arm1"].enable(False).success
            wait_hold(peers["/arm1"], t, qs["/arm1"], "hold of /arm1")
            quiet_from = peers["/arm1"].mark()
            wait_chunk_after(peers["/arm2"], quiet_from)
            assert quiet(peers["/arm1"], quiet_from, 1.0, chunks_only=True) == []
            assert all(n.running() for n in nodes.values())
        except BaseException as e:
            for ns, n in nodes.items():
                e.add_note(f"node {ns} (domain {domain}) exit={n.returncode}:\n{n.stderr_tail()}")
            raise


# -------------------------------------------------------------------------------------------------
# planned_path and rviz

URDF_ROOT = "wam_base"
# Joint origins (parent to child) and axes of a small arm: one revolute joint per bundle joint.
URDF_OFFSETS = (
    (0.0, 0.0, 0.3),
    (0.0, 0.0, 0.25),
    (0.2, 0.0, 0.0),
    (0.0, 0.0, 0.2),
    (0.15, 0.0, 0.0),
    (0.0, 0.0, 0.1),
    (0.05, 0.0, 0.0),
)
URDF_AXES = ("0 0 1", "0 1 0", "0 1 0", "0 0 1", "0 1 0", "0 0 1", "1 0 0")
# No point of the chain is further from the root than the sum of its offsets.
REACH = float(sum(np.linalg.norm(o) for o in URDF_OFFSETS))


def arm_urdf() -> str:
    links = [URDF_ROOT] + [f"link{i + 1}" for i in range(len(BUNDLE_JOINTS))]
    parts = ['<?xml version="1.0"?>', '<robot name="wam_test_arm">']
    parts += [f'  <link name="{link}"/>' for link in links]
    for i, (name, offset, axis) in enumerate(zip(BUNDLE_JOINTS, URDF_OFFSETS, URDF_AXES)):
        xyz = " ".join(str(v) for v in offset)
        parts += [
            f'  <joint name="{name}" type="revolute">',
            f'    <parent link="{links[i]}"/>',
            f'    <child link="{links[i + 1]}"/>',
            f'    <origin xyz="{xyz}" rpy="0 0 0"/>',
            f'    <axis xyz="{axis}"/>',
            '    <limit lower="-3.0" upper="3.0" velocity="1000.0" effort="10.0"/>',
            "  </joint>",
        ]
    parts.append("</robot>")
    return "\n".join(parts)


# Limits from the URDF (NodeProcess then leaves its joint_limits.* out); max_jump is not in a URDF.
URDF_PARAMS: dict[str, Any] = {
    "instruction": INSTRUCTION,
    "enabled_at_start": True,
    "robot_description": arm_urdf(),
    "joint_limits.max_jump": 100.0,
}


def urdf_fk(q: Sequence[float]) -> np.ndarray:
    """The end of :func:`arm_urdf`'s chain at ``q``: each joint translates by its offset, then turns
    about its axis (URDF: origin, then the joint's motion)."""
    position = np.zeros(3)
    rotation = np.eye(3)
    for angle, offset, axis in zip(q, URDF_OFFSETS, URDF_AXES):
        position = position + rotation @ np.array(offset)
        k = np.array([float(v) for v in axis.split()])
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        turn = np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)
        rotation = rotation @ turn
    return position


def test_planned_path_is_a_line_strip_in_the_urdf_root_frame() -> None:
    with running(URDF_PARAMS) as (node, peer):
        paths = TopicLog(peer.node, MarkerArray, "/wam_policy/planned_path", ANY_RELIABILITY)
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, FIRST_CHUNK_TIMEOUT)

        def is_path(m: Marker) -> bool:
            return m.type == Marker.LINE_STRIP and m.action == Marker.ADD and len(m.points) >= 2

        array = paths.wait_for(lambda a: any(is_path(m) for m in a.markers), 10.0)
        assert array is not None, f"no LINE_STRIP of >= 2 points in {len(paths.since())} arrays"
        line = next(m for m in array.markers if is_path(m))
        assert line.header.frame_id == URDF_ROOT, line.header.frame_id
        xyz = np.array([[p.x, p.y, p.z] for p in line.points])
        assert np.isfinite(xyz).all()
        assert (np.linalg.norm(xyz, axis=1) <= REACH + 1e-6).all(), xyz
        # Some published path is the forward kinematics of a commanded trajectory's points (the path
        # starts at the plan's anchor, then follows the trajectory's points).
        with peer.lock:
            trajectories = [r.msg for r in peer.trajectories]

        def fk_of(traj: JointTrajectory) -> np.ndarray:
            return np.array([urdf_fk(list(p.positions)) for p in traj.points])

        lines = [
            np.array([[p.x, p.y, p.z] for p in m.points])
            for a in paths.since()
            for m in a.markers
            if is_path(m)
        ]
        assert any(
            len(pts) == len(t.points) + 1 and np.allclose(pts[1:], fk_of(t), atol=1e-9)
            for pts in lines
            for t in trajectories
            if len(t.points) > 1
        ), "no planned path equals the forward kinematics of a commanded trajectory"
        # Beside it, a text with the node's state (its wording is the node's).
        texts = [
            m.text for a in paths.since() for m in a.markers if m.type == Marker.TEXT_VIEW_FACING
        ]
        assert any(text.strip() for text in texts), f"no TEXT_VIEW_FACING with a state: {texts}"
        assert node.running()


RVIZ_CONFIG = REPO / "config" / "wam_policy.rviz"
# rviz display class (last part of "rviz_default_plugins/Image") -> message type.
DISPLAY_TYPES = {
    "Image": "sensor_msgs/msg/Image",
    "Camera": "sensor_msgs/msg/Image",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "Marker": "visualization_msgs/msg/Marker",
    "Path": "nav_msgs/msg/Path",
    "JointState": "sensor_msgs/msg/JointState",
}
# Published by robot_state_publisher or the sim, never the node.
NOT_THE_NODES = ("RobotModel", "TF")


def rviz_topics(path: Path) -> list[tuple[str, str]]:
    """(display class, topic) of every display of an rviz config with a ``Topic`` (``Value``),
    relative names resolved in the root namespace; groups are walked."""
    config = yaml.safe_load(path.read_text())
    out: list[tuple[str, str]] = []

    def walk(displays: Sequence[Mapping[str, Any]]) -> None:
        for d in displays or []:
            cls = str(d.get("Class", "")).rsplit("/", 1)[-1]
            if isinstance(d.get("Displays"), list):
                walk(d["Displays"])
            topic = d.get("Topic")
            value = topic.get("Value") if isinstance(topic, Mapping) else topic
            if cls in NOT_THE_NODES or not isinstance(value, str) or not value:
                continue
            out.append((cls, value if value.startswith("/") else "/" + value))

    walk(config.get("Visualization Manager", {}).get("Displays", []))
    return out


def message_class(type_name: str) -> Any:
    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def test_limits_and_path_from_the_robot_description_topic() -> None:
    """No limit parameters and no URDF parameter: start-up waits for the latched URDF on
    robot_description (as robot_state_publisher publishes it), takes the limits from it and draws
    the path."""
    params = {
        "instruction": INSTRUCTION,
        "enabled_at_start": True,
        "joint_limits.lower": None,
        "joint_limits.upper": None,
        "joint_limits.max_velocity": None,
        "joint_limits.max_jump": 100.0,
        "robot_description_timeout_s": 30.0,
    }
    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    with running(params) as (node, peer):
        description = peer.node.create_publisher(String, "/robot_description", latched)
        description.publish(String(data=arm_urdf()))
        assert node.wait_for_log("robot description received", 30.0), node.stderr_tail()
        paths = TopicLog(peer.node, MarkerArray, "/wam_policy/planned_path", ANY_RELIABILITY)
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, FIRST_CHUNK_TIMEOUT)
        assert paths.wait_for(
            lambda a: any(m.type == Marker.LINE_STRIP and len(m.points) >= 2 for m in a.markers),
            10.0,
        ), "no planned path"
        # The URDF's limits are in force: every commanded position within [-3, 3].
        with peer.lock:
            positions = [p for r in peer.trajectories for pt in r.msg.points for p in pt.positions]
        assert positions and all(-3.0 <= p <= 3.0 for p in positions)
        assert node.running()


def test_every_rviz_topic_is_published() -> None:
    if not RVIZ_CONFIG.exists():
        pytest.skip(f"{RVIZ_CONFIG} not written yet")
    displays = rviz_topics(RVIZ_CONFIG)
    assert displays, f"no display with a topic in {RVIZ_CONFIG}"
    # The monitor's preview is published with the monitor on.
    with running({**URDF_PARAMS, "monitor": True}) as (node, peer):
        logs = {
            topic: TopicLog(peer.node, message_class(DISPLAY_TYPES[cls]), topic, ANY_RELIABILITY)
            for cls, topic in displays
            if cls in DISPLAY_TYPES
        }
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, FIRST_CHUNK_TIMEOUT)
        # The camera topics are the peer's (the cameras'); everything else is the node's.
        fed = set(peer.topics.cameras.values()) | {peer.topics.joint_states}
        for cls, topic in displays:
            want = DISPLAY_TYPES.get(cls)

            def publishers(topic: str = topic) -> list[Any]:
                return [
                    i
                    for i in peer.node.get_publishers_info_by_topic(topic)
                    if topic in fed or (i.node_name == "wam_policy" and i.node_namespace == "/")
                ]

            infos = peer.wait_for(publishers, 10.0)
            assert infos, f"{cls} display: nobody publishes {topic}"
            if want is not None:
                types = {i.topic_type for i in infos}
                assert types == {want}, f"{cls} display of {topic}: published as {types}"
                assert logs[topic].wait_count(1, timeout=10.0)
        assert node.running()
