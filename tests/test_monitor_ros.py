"""The monitor on the real graph (issue 13): the node compares every predicted frame with the real
frame taken nearest to its predicted time, publishes one score per camera and chunk on
``~/monitor`` (and the pairs on ``~/monitor/preview``), reports it in ``~/status`` and
``/diagnostics``, and, when asked to, holds on a mismatch or ends a ``~/run`` goal as done.

The test bundle's predictions are not meant to match anything, so these tests check the plumbing
(pairing by time, the messages, the rules firing); that a differing frame scores higher than a
matching one is checked on the trained bundle (tests/monitor_bundle.rs), and how well the score flags
perturbations in the simulator is measured by ``python -m wam_eval.monitor_bench``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from test_controller_ros import wait_chunk_after, wait_hold  # noqa: E402
from test_node_ros import INSTRUCTION, NODE_BIN, Q, running, start_constant, wait_status  # noqa: E402
from test_stack_ros import RESULT, outcome_is, with_run  # noqa: E402
from wam_peer.stack import ANY_RELIABILITY, TopicLog  # noqa: E402
from wam_policy.msg import Monitor  # noqa: E402

TOLERANCE = 0.05
CAMERAS = ["exterior", "wrist"]
# The test bundle: 2 cameras, 2 predicted frames of 32 x 32. The monitor's preview: per camera the
# predicted row above the observed row; ~/preview gains those rows under its own (a blank column
# under the newest observed frame).
PREVIEW_SIZE = (2 * 2 * 32, 2 * 32)
PREVIEW_WITH_MONITOR = (3 * 2 * 32, 3 * 32)

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

MONITOR_ON: dict[str, Any] = {
    "instruction": INSTRUCTION,
    "enabled_at_start": True,
    "monitor": True,
    "monitor_pair_tolerance_s": TOLERANCE,
}


def seconds(t: Any) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def test_monitor_pairs_predicted_and_observed_frames_by_time() -> None:
    with running(MONITOR_ON) as (node, peer):
        monitors = TopicLog(peer.node, Monitor, "/wam_policy/monitor")
        previews = TopicLog(peer.node, Image, "/wam_policy/monitor/preview", ANY_RELIABILITY)
        main_previews = TopicLog(peer.node, Image, "/wam_policy/preview", ANY_RELIABILITY)
        diags = TopicLog(peer.node, DiagnosticArray, "/diagnostics")
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, 15.0)
        msgs = monitors.wait_count(3, timeout=20.0)
        for m in msgs:
            assert list(m.cameras) == CAMERAS
            assert not m.calibrated and all(math.isnan(z) for z in m.z), m
            assert sum(m.paired) >= 1, m
            assert len(m.predicted_stamps) == len(m.observed_stamps) == 2 * 2
            for p, o in zip(m.predicted_stamps, m.observed_stamps):
                if seconds(o) > 0.0:
                    # Paired with the real frame nearest to the predicted time.
                    assert abs(seconds(o) - seconds(p)) <= TOLERANCE + 1e-9, (
                        seconds(o),
                        seconds(p),
                    )
                    assert seconds(p) > seconds(m.header.stamp)
            finite = [s for s in m.latent_score if not math.isnan(s)]
            assert finite and all(s >= 0.0 for s in finite), m
            assert m.score == pytest.approx(max(finite)), m
            assert all(not math.isnan(p) for p, n in zip(m.psnr_db, m.paired) if n > 0), m
        # The peer feeds frames at 25 Hz: every predicted frame finds one within 0.05 s.
        assert any(sum(m.paired) == 4 for m in msgs), [list(m.paired) for m in msgs]
        image = previews.wait_count(1, timeout=10.0)[-1]
        assert (image.height, image.width) == PREVIEW_SIZE
        # ~/preview: its rows, then the same pairs (the last scored chunk's) under them, from column 1.
        main = main_previews.wait_count(1, timeout=10.0)[-1]
        assert (main.height, main.width) == PREVIEW_WITH_MONITOR
        row = 3 * 32 * 3

        def embedded(p: Image) -> bytes:
            data = bytes(p.data)
            return b"".join(
                data[(2 * 32 + y) * row + 32 * 3 : (2 * 32 + y + 1) * row] for y in range(4 * 32)
            )

        def carries_pairs() -> bool:
            pairs = {bytes(m.data) for m in previews.since()}
            return any(embedded(p) in pairs for p in main_previews.since())

        assert peer.wait_for(carries_pairs, 10.0), "no ~/preview carries the monitor's pairs"
        status = wait_status(
            peer, lambda s: not math.isnan(s.monitor_score), "monitor_score", 5.0, 0.0
        )
        assert not status.monitor_calibrated and status.monitor_holds == 0
        keys = {
            kv.key for d in diags.wait_count(1, timeout=5.0) for st in d.status for kv in st.values
        }
        assert {"monitor_score", "monitor_done", "monitor_holds"} <= keys
        assert node.running()


def test_monitor_off_publishes_no_scores() -> None:
    params = {k: v for k, v in MONITOR_ON.items() if k != "monitor"}
    with running(params) as (node, peer):
        monitors = TopicLog(peer.node, Monitor, "/wam_policy/monitor")
        start_constant(peer, node)
        wait_chunk_after(peer, 0.0, 15.0)
        assert peer.wait_for(lambda: len(peer.chunks_since()) >= 4, 15.0)
        assert monitors.since() == []
        status = wait_status(peer, lambda s: s.enabled, "enabled", 5.0, 0.0)
        assert math.isnan(status.monitor_score)


def test_hold_rule_holds_closes_the_gate_and_ends_a_goal_as_world_mismatch() -> None:
    # Every score is above -1: the rule fires after two scored chunks.
    params = {
        **MONITOR_ON,
        "enabled_at_start": False,
        "monitor_warn_score": -1.0,
        "monitor_hold_chunks": 2,
    }
    with with_run(params) as (node, peer, run):
        monitors = TopicLog(peer.node, Monitor, "/wam_policy/monitor")
        t0 = peer.mark()
        goal = run.send(INSTRUCTION)
        assert goal.accepted
        end = goal.result(30.0)
        outcome_is(end, RESULT.OUTCOME_WORLD_MISMATCH, "WORLD_MISMATCH", GoalStatus.STATUS_ABORTED)
        assert "monitor" in end.result.message, str(end)
        assert len(monitors.since(t0)) >= 2
        wait_hold(peer, t0, Q, "the monitor's hold", 5.0)
        status = wait_status(
            peer, lambda s: s.monitor_holds >= 1 and not s.enabled, "monitor hold", 5.0, t0
        )
        assert "held by the monitor" in status.detail, status.detail
        # The gate stays closed until someone opens it again.
        t1 = peer.mark()
        time.sleep(1.5)
        assert [t for t in peer.trajectories_since(t1) if len(t.points) > 1] == []
        assert peer.enable(True).success
        wait_chunk_after(peer, t1, 15.0)
        assert node.running()


def test_done_estimate_ends_a_goal_done() -> None:
    # Thresholds no chunk can miss: done after two scored chunks.
    params = {
        **MONITOR_ON,
        "enabled_at_start": False,
        "monitor_done_chunks": 2,
        "monitor_done_motion": 1e9,
        "monitor_done_change": 1e9,
    }
    with with_run(params) as (node, peer, run):
        monitors = TopicLog(peer.node, Monitor, "/wam_policy/monitor")
        t0 = peer.mark()
        goal = run.send(INSTRUCTION)
        end = goal.result(30.0)
        outcome_is(end, RESULT.OUTCOME_DONE, "DONE", GoalStatus.STATUS_SUCCEEDED)
        done = [m for m in monitors.since(t0) if m.done]
        assert done and done[0].done_confidence == 1.0, [m.done for m in monitors.since(t0)]
        wait_hold(peer, t0, Q, "hold after DONE", 5.0)
        # The next goal starts a new streak: it is not done before two chunks of its own are scored.
        t1 = peer.mark()
        second = run.send(INSTRUCTION)
        end2 = second.result(30.0)
        outcome_is(end2, RESULT.OUTCOME_DONE, "DONE", GoalStatus.STATUS_SUCCEEDED)
        assert len(monitors.since(t1)) >= 2, "the second goal ended on the first goal's streak"
        assert node.running()
