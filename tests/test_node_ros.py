"""End-to-end tests of the wam_policy node over ROS 2: the node binary runs as a child process
with the test bundle, and an rclpy peer (tests/wam_peer) feeds it cameras, joint states and
instructions and checks everything it publishes against the bundle's numpy reference.

Needs the environment of scripts/env.sh and a built node: WAM_NODE_BIN, default
target/release/wam_policy_node. Every test runs in its own ROS_DOMAIN_ID, counted up from
WAM_TEST_DOMAIN_BASE (default derived from the pid) and kept in 1..100.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_BIN = Path(
    os.environ.get("WAM_NODE_BIN", str(REPO / "target" / "release" / "wam_policy_node"))
)

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.msg", reason="needs the package's messages: source scripts/env.sh")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from wam_peer import (  # noqa: E402
    BUNDLE_JOINTS,
    VIDEO_DT,
    Expected,
    NodeProcess,
    Peer,
    PeerTopics,
    checker_rgb,
    compressed_image,
    expected_for,
    fixed_frame,
    fixed_joints,
    gradient_rgb,
    joint_state,
    predicted_u8,
    raw_image,
    rgb_of,
    stamp_seconds,
    time_of,
    trajectory_arrays,
    trajectory_error,
    uniform_rgb,
)
from wam_policy.msg import ActionChunk, PolicyStatus  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

INSTRUCTION = "reach the red cube"
Q = (0.05, -0.1, 0.15, -0.2, 0.25, 0.3, 0.02)
TOL = 1e-4
STAMP_TOL = 2e-6
CAMERAS = ("exterior", "wrist")
# Chunks come about every 0.8 s minus the latency: a few of them need a few seconds.
CHUNK_TIMEOUT = 6.0
QUIET_WINDOW = 2.0

_domains = itertools.count()
_DOMAIN_BASE = int(os.environ.get("WAM_TEST_DOMAIN_BASE", str(os.getpid() % 60 + 1)))


def next_domain() -> int:
    return (_DOMAIN_BASE - 1 + next(_domains)) % 100 + 1


def ext_image() -> np.ndarray:
    return gradient_rgb(32, 32)


def wrist_image() -> np.ndarray:
    return checker_rgb(32, 32, 40, 200)


@contextmanager
def running(
    params: Mapping[str, Any],
    topics: PeerTopics | None = None,
) -> Iterator[tuple[NodeProcess, Peer]]:
    """The node with ``params`` (plus the topics of ``topics``) and a peer, in a fresh domain;
    on failure the node's log tail is attached to the error."""
    domain = next_domain()
    topics = topics or PeerTopics()
    # Exact-value tests: chunks as the model computed them (no ramp, no blending with the previous
    # chunk); the execution tests set these themselves.
    # The peer's joints do not follow the commands, so plans start at the measured state.
    all_params: dict[str, Any] = {
        "boundary_mode": "replace",
        "ramp_in_s": 0.0,
        "plan_anchor": "measured",
    }
    all_params.update(topics.node_params())
    all_params.update(params)
    with NodeProcess(all_params, domain, binary=NODE_BIN) as node:
        try:
            with Peer(domain, topics) as peer:
                yield node, peer
                assert not peer.publish_errors, peer.publish_errors
        except BaseException as e:
            e.add_note(
                f"node (domain {domain}) exit={node.returncode}; log tail:\n{node.stderr_tail()}"
            )
            raise


def start_constant(
    peer: Peer,
    node: NodeProcess,
    q: Sequence[float] = Q,
    images: Mapping[str, np.ndarray] | None = None,
    names: Sequence[str] = BUNDLE_JOINTS,
    **kwargs: Any,
) -> None:
    peer.feed_constant(
        images if images is not None else {"exterior": ext_image(), "wrist": wrist_image()},
        q,
        names,
        **kwargs,
    )
    assert peer.wait_for_node(15.0), "node not discovered"
    assert node.running()


def stamp_key(t: Time) -> tuple[int, int]:
    return (int(t.sec), int(t.nanosec))


def wait_trajectories(
    peer: Peer, since: float, count: int, timeout: float = CHUNK_TIMEOUT
) -> list[JointTrajectory]:
    def enough() -> list[JointTrajectory] | None:
        got = peer.trajectories_since(since)
        return got if len(got) >= count else None

    got = peer.wait_for(enough, timeout)
    assert got is not None, f"fewer than {count} trajectories in {timeout} s"
    return got


def wait_matching(
    peer: Peer, exp: Expected, since: float, timeout: float = CHUNK_TIMEOUT
) -> ActionChunk:
    """The first ActionChunk received after ``since`` whose trajectory matches ``exp``."""

    def find() -> ActionChunk | None:
        for c in peer.chunks_since(since):
            if trajectory_error(c.trajectory, exp) < TOL:
                return c
        return None

    chunk = peer.wait_for(find, timeout)
    if chunk is None:
        recent = peer.chunks_since(since)
        errors = [trajectory_error(c.trajectory, exp) for c in recent]
        detail = ""
        if recent:
            _, pos, _ = trajectory_arrays(recent[-1].trajectory)
            detail = f"\nlast positions:\n{pos}\nexpected:\n{exp.actions}"
        pytest.fail(
            f"no chunk matching the expected actions in {timeout} s (errors {errors}){detail}"
        )
    return chunk


def wait_predicted(peer: Peer, camera: str, stamp: float, timeout: float = 3.0) -> list[Image]:
    """The predicted frames of ``camera`` for the chunk of observation ``stamp``, in step order."""

    def find() -> list[Image] | None:
        out: list[Image] = []
        for f in (1, 2):
            want = stamp + f * VIDEO_DT
            hits = [
                m
                for m in peer.predicted_since(camera)
                if abs(stamp_seconds(m.header.stamp) - want) < STAMP_TOL
            ]
            if not hits:
                return None
            out.append(hits[-1])
        return out

    frames = peer.wait_for(find, timeout)
    assert frames is not None, f"no predicted frames of {camera} for stamp {stamp:.6f}"
    return frames


def check_predicted(peer: Peer, chunk: ActionChunk, exp: Expected) -> None:
    stamp = stamp_seconds(chunk.header.stamp)
    for v, cam in enumerate(CAMERAS):
        for f, msg in enumerate(wait_predicted(peer, cam, stamp)):
            assert (msg.width, msg.height, msg.encoding) == (32, 32, "rgb8")
            assert msg.step == 96 and msg.header.frame_id == cam
            err = np.abs(predicted_u8(msg) - exp.frames[v, f]).max()
            assert err <= 1, f"{cam} predicted frame {f}: max error {err} levels"


def quiet(
    peer: Peer, since: float, window: float = QUIET_WINDOW, *, chunks_only: bool = False
) -> list[JointTrajectory]:
    """Trajectories received in ``window`` seconds from now on (expected: none). ``chunks_only``
    leaves out holds (one-point trajectories), e.g. the hold a reset commands."""

    def got() -> list[JointTrajectory]:
        return [t for t in peer.trajectories_since(since) if not chunks_only or len(t.points) > 1]

    peer.wait_for(got, window)
    return got()


def status_now(peer: Peer, timeout: float = 2.0) -> PolicyStatus:
    s = peer.wait_for_status(lambda _s: True, timeout)
    assert s is not None, "no status"
    return s


def wait_status(
    peer: Peer,
    predicate: Callable[[PolicyStatus], bool],
    what: str,
    timeout: float = 3.0,
    since: float = 0.0,
) -> PolicyStatus:
    """The first status received after ``since`` that satisfies ``predicate``."""
    s = peer.wait_for_status(predicate, timeout, since=since)
    assert s is not None, f"no status with {what}; last: {peer.latest_status()}"
    return s


# -------------------------------------------------------------------------------------------------


def test_happy_path_trajectory_chunk_frames_preview_status() -> None:
    ext, wrist = ext_image(), wrist_image()
    exp = expected_for(Q, [ext, wrist], INSTRUCTION)
    with running({"instruction": INSTRUCTION}) as (node, peer):
        start_constant(peer, node)
        s = status_now(peer)
        assert s.state == PolicyStatus.STATE_DISABLED and not s.enabled
        response = peer.enable(True)
        assert response.success, response.message
        t0 = peer.mark()
        trajectories = wait_trajectories(peer, t0, 3)
        peer.wait_for(lambda: len(peer.chunks_since(t0)) >= 3, 2.0)
        chunks = peer.chunks_since(t0)
        sent = {c: set(peer.sent_stamps[c]) for c in CAMERAS}

        by_stamp: dict[tuple[int, int], JointTrajectory] = {}
        for traj in trajectories:
            assert list(traj.joint_names) == list(BUNDLE_JOINTS)
            steps, pos, vel = trajectory_arrays(traj)
            assert steps == list(range(steps[0], 8)), steps
            times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in traj.points]
            assert all(abs(t - (k + 1) * 0.1) < 1e-6 for t, k in zip(times, steps)), times
            assert np.abs(pos - exp.actions[steps]).max() < TOL, (pos, exp.actions)
            # The first point's velocity depends on where the command stream was at publication (the
            # plan's anchor); the others are central differences of the chunk.
            assert np.abs(vel[1:] - exp.velocities[steps][1:]).max() < TOL, (vel, exp.velocities)
            assert np.all(vel[-1] == 0.0)
            # The stamp is the older of the cameras' newest frames: one of the stamps we sent.
            stamp = stamp_seconds(traj.header.stamp)
            assert any(min(abs(stamp - t) for t in sent[c]) < STAMP_TOL for c in CAMERAS), stamp
            by_stamp[stamp_key(traj.header.stamp)] = traj

        assert len(chunks) >= 3
        ids = [c.chunk_id for c in chunks]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
        for chunk in chunks:
            assert chunk.model_id == "wam_test_v1"
            assert chunk.denoise_steps == 4
            assert chunk.execution_provider == "cpu"
            assert chunk.total_s > 0.0 and chunk.denoise_s > 0.0
            assert chunk.total_s >= chunk.denoise_s
            key = stamp_key(chunk.header.stamp)
            assert key == stamp_key(chunk.trajectory.header.stamp)
            assert key in by_stamp, "chunk without a published trajectory"
            assert chunk.trajectory == by_stamp[key]

        chunk = chunks[-1]
        stamp = stamp_seconds(chunk.header.stamp)
        check_predicted(peer, chunk, exp)

        def preview_for() -> Image | None:
            hits = [
                p
                for p in peer.previews_since(t0)
                if stamp_key(p.header.stamp) == stamp_key(chunk.header.stamp)
            ]
            return hits[-1] if hits else None

        preview = peer.wait_for(preview_for, 3.0)
        assert preview is not None, f"no preview stamped {stamp}"
        assert (preview.width, preview.height, preview.encoding) == (96, 64, "rgb8")
        tiles = rgb_of(preview).astype(np.int64)
        for v, observed in enumerate((ext, wrist)):
            row = tiles[v * 32 : (v + 1) * 32]
            assert np.abs(row[:, 0:32] - observed.astype(np.int64)).max() <= 1, f"observed tile {v}"
            for f in range(2):
                tile = row[:, (f + 1) * 32 : (f + 2) * 32]
                assert np.abs(tile - exp.frames[v, f]).max() <= 1, f"predicted tile {v},{f}"

        n = len(chunks)
        s = wait_status(
            peer,
            lambda s: s.chunks_published >= n and s.state == PolicyStatus.STATE_RUNNING,
            "RUNNING",
        )
        assert s.enabled and s.state_name == "RUNNING"
        assert s.model_id == "wam_test_v1" and s.execution_provider == "cpu"
        assert s.inferences >= s.chunks_published >= n
        assert (s.bad_images, s.bad_joint_states, s.bad_instructions) == (0, 0, 0)
        assert s.safety_rejections == 0 and s.stale_observations == 0
        assert 0.0 < s.latency_p50_s <= s.latency_p95_s <= s.latency_max_s
        # ~/status comes at status_period_s (0.1 s).
        t_rate = peer.mark()
        peer.wait_for(lambda: False, 1.0)
        assert 5 <= len(peer.statuses_since(t_rate)) <= 15
        assert node.running()


def test_video_decode_on_demand_decodes_only_while_frames_are_watched() -> None:
    """`video_decode: on_demand`: nobody subscribes to the predicted frames or the preview, so no
    chunk is decoded (the actions still come); a subscriber appears, and the chunks after it are
    decoded and their frames published with the model's values."""
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    topics = PeerTopics(watch_frames=False)
    params = {"instruction": INSTRUCTION, "video_decode": "on_demand", "video_decode_every": 0}
    with running(params, topics) as (node, peer):
        start_constant(peer, node)
        assert peer.enable(True).success
        s = wait_status(peer, lambda s: s.chunks_published >= 3, "3 chunks", CHUNK_TIMEOUT)
        assert s.decoded_chunks == 0, s
        peer.watch_frames()
        s = wait_status(peer, lambda s: s.decoded_chunks >= 2, "decoded chunks", CHUNK_TIMEOUT)
        t0 = peer.mark()
        peer.wait_for(lambda: len(peer.chunks_since(t0)) >= 1, CHUNK_TIMEOUT)
        check_predicted(peer, peer.chunks_since(t0)[-1], exp)
        assert s.decoded_chunks < s.chunks_published


def test_video_decode_every_nth_chunk_without_watchers() -> None:
    topics = PeerTopics(watch_frames=False)
    params = {"instruction": INSTRUCTION, "video_decode": "on_demand", "video_decode_every": 2}
    with running(params, topics) as (node, peer):
        start_constant(peer, node)
        assert peer.enable(True).success
        s = wait_status(peer, lambda s: s.chunks_published >= 6, "6 chunks", 3 * CHUNK_TIMEOUT)
        # Every second inference decodes; published chunks are a subset of the inferences.
        assert 1 <= s.decoded_chunks <= (s.inferences + 1) // 2, s


def test_instruction_topic_changes_actions() -> None:
    ext, wrist = ext_image(), wrist_image()
    first = expected_for(Q, [ext, wrist], INSTRUCTION)
    second_text = "Push the BLUE object, now!"
    second = expected_for(Q, [ext, wrist], second_text)
    assert sum(first.token_ids) != sum(second.token_ids)
    with running({"enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        peer.set_instruction(INSTRUCTION)
        wait_matching(peer, first, 0.0)
        t1 = peer.mark()
        peer.set_instruction(second_text)
        wait_matching(peer, second, t1)
        # Once switched, it stays switched.
        t2 = peer.mark()
        wait_trajectories(peer, t2, 1)
        for traj in peer.trajectories_since(t2):
            assert trajectory_error(traj, second) < TOL
        # More than max_tokens words, tabs and punctuation: truncated to the first 8 ids.
        third_text = "  Touch\tthe green cube; reach (the) red object to a zone... "
        third = expected_for(Q, [ext_image(), wrist_image()], third_text)
        assert len(third_text.split()) > 8 and sum(third.token_ids) != sum(second.token_ids)
        t3 = peer.mark()
        peer.set_instruction(third_text)
        wait_matching(peer, third, t3)
        assert status_now(peer).bad_instructions == 0


def test_disabled_at_start_then_enable_and_disable_holds() -> None:
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": False}) as (node, peer):
        start_constant(peer, node)
        assert quiet(peer, 0.0, 1.5) == [], "published while disabled"
        assert peer.chunks_since() == []
        s = status_now(peer)
        assert s.state == PolicyStatus.STATE_DISABLED and s.chunks_published == 0

        assert peer.enable(True).success
        t0 = peer.mark()
        wait_matching(peer, exp, t0)
        assert peer.enable(True).success  # enabling twice is harmless

        t1 = peer.mark()
        assert peer.enable(False).success
        holds = wait_trajectories(peer, t1, 1, 2.0)
        hold = holds[0]
        assert list(hold.joint_names) == list(BUNDLE_JOINTS)
        assert len(hold.points) == 1, f"hold has {len(hold.points)} points"
        assert np.allclose(hold.points[0].positions, Q, atol=1e-12)
        assert np.allclose(hold.points[0].velocities, 0.0)
        # Nothing after the hold while disabled.
        t2 = peer.mark()
        assert quiet(peer, t2, 1.5) == []
        s = wait_status(
            peer,
            lambda s: s.state == PolicyStatus.STATE_DISABLED and not s.enabled,
            "DISABLED",
            since=t1,
        )
        assert s.state_name == "DISABLED"


def test_reset_service_then_chunks_resume() -> None:
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0)
        for _ in range(2):
            t = peer.mark()
            response = peer.reset()
            assert response.success, response.message
            wait_matching(peer, exp, t)
        assert node.running()


ENCODING_CASES: list[tuple[str, int, int, int, tuple[int, int, int], tuple[int, int, int]]] = [
    # encoding, width, height, row padding, exterior colour, wrist colour
    ("bgr8", 32, 32, 0, (200, 100, 30), (10, 60, 250)),
    ("rgba8", 32, 32, 4, (30, 220, 90), (120, 20, 40)),
    ("bgra8", 37, 23, 0, (250, 5, 128), (64, 64, 200)),
    ("mono8", 37, 23, 3, (180, 180, 180), (70, 70, 70)),
    ("rgb8", 45, 31, 2, (15, 240, 140), (200, 200, 10)),
]


def test_each_encoding_and_size_gives_expected_actions() -> None:
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        for encoding, w, h, pad, ext_rgb, wrist_rgb in ENCODING_CASES:
            images = {
                "exterior": uniform_rgb(w, h, ext_rgb),
                "wrist": uniform_rgb(w, h, wrist_rgb),
            }
            seen = {
                c: uniform_rgb(32, 32, rgb)
                for c, rgb in (("exterior", ext_rgb), ("wrist", wrist_rgb))
            }
            exp = expected_for(Q, [seen["exterior"], seen["wrist"]], INSTRUCTION)
            # A camera's new size is accepted once it persists (SIZE_CHANGE_FRAMES = 5 frames in a
            # row; a reset does not forget the old size). The cameras pause around the reset so that
            # no frame of the old size reaches the node after it.
            peer.pause(*CAMERAS)
            peer.wait_for(lambda: False, 0.05)
            t = peer.mark()
            assert peer.reset().success
            peer.feed_constant(images, Q, BUNDLE_JOINTS, encoding=encoding, pad=pad)
            peer.resume(*CAMERAS)
            try:
                chunk = wait_matching(peer, exp, t)
                check_predicted(peer, chunk, exp)
            except BaseException as e:
                e.add_note(f"encoding {encoding} {w}x{h} pad {pad}")
                raise
        s = status_now(peer)
        # Each size change refuses the first 4 frames of the new size, per camera; nothing else.
        sizes = [(w, h) for _, w, h, *_ in ENCODING_CASES]
        changes = sum(a != b for a, b in zip([(32, 32)] + sizes, sizes))
        assert s.bad_images == changes * len(CAMERAS) * 4, s


def test_extra_joints_in_shuffled_order_and_robot_joint_names() -> None:
    robot = ["arm_j1", "arm_j2", "arm_j3", "arm_j4", "arm_j5", "arm_j6", "hand"]
    extra = {"finger_left": 9.0, "base_yaw": -7.0, "arm_j1_mimic": 5.0}
    rng = np.random.default_rng(7)
    pairs = list(zip(robot, Q)) + list(extra.items())
    order = rng.permutation(len(pairs))
    names = [pairs[i][0] for i in order]
    positions = [pairs[i][1] for i in order]
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, "joint_names": robot}
    with running(params) as (node, peer):
        start_constant(peer, node, q=positions, names=names)
        chunk = wait_matching(peer, exp, 0.0)
        assert list(chunk.trajectory.joint_names) == robot
        s = status_now(peer)
        assert s.bad_joint_states == 0


def _bad_image_cases() -> dict[str, Callable[[int, Time], Image | None]]:
    good = raw_image(ext_image(), "rgb8")

    def wrong_encoding(_i: int, now: Time) -> Image:
        m = raw_image(ext_image(), "rgb8")
        m.encoding = "yuv422"
        m.header.stamp = now
        return m

    def data_short(_i: int, now: Time) -> Image:
        m = raw_image(ext_image(), "rgb8")
        m.data = bytes(m.data)[: m.step * m.height - 1]
        m.header.stamp = now
        return m

    first: list[Time] = []

    def stamps_backwards(i: int, now: Time) -> Image:
        if not first:
            first.append(now)
        good.header.stamp = time_of(stamp_seconds(first[0]) - 0.001 * i)
        return good

    calls: list[int] = []

    def size_change(_i: int, now: Time) -> Image:
        # The first frame fixes the camera's size at 32x32; later ones flicker between 40x30 and
        # 41x31, so no new size persists long enough to be accepted (5 frames in a row).
        calls.append(1)
        first_frame = len(calls) == 1
        w, h = (40, 30) if len(calls) % 2 else (41, 31)
        m = raw_image(ext_image() if first_frame else uniform_rgb(w, h, (255, 255, 255)), "rgb8")
        m.header.stamp = now
        return m

    def zero_stamp(_i: int, _now: Time) -> Image:
        m = raw_image(ext_image(), "rgb8")
        m.header.stamp = Time()
        return m

    return {
        "image_zero_stamp": zero_stamp,
        "wrong_encoding": wrong_encoding,
        "data_short": data_short,
        "image_stamps_backwards": stamps_backwards,
        "size_change": size_change,
    }


def _bad_joint_cases() -> dict[str, Callable[[int, Time], JointState | None]]:
    def nan(_i: int, now: Time) -> JointState:
        q = list(Q)
        q[2] = math.nan
        return joint_state(BUNDLE_JOINTS, q, now)

    def missing(_i: int, now: Time) -> JointState:
        return joint_state(BUNDLE_JOINTS[:-1], Q[:-1], now)

    first: list[float] = []

    def backwards(i: int, now: Time) -> JointState:
        if not first:
            first.append(stamp_seconds(now) - 0.2)
        return joint_state(BUNDLE_JOINTS, Q, time_of(first[0] - 1e-4 * i))

    def zero_stamp(_i: int, _now: Time) -> JointState:
        return joint_state(BUNDLE_JOINTS, Q, Time())

    return {
        "joint_nan": nan,
        "joint_missing": missing,
        "joint_stamps_backwards": backwards,
        "joint_zero_stamp": zero_stamp,
    }


def test_bad_messages_are_refused_and_counted() -> None:
    good_ext = fixed_frame(raw_image(ext_image(), "rgb8"))
    good_wrist = fixed_frame(raw_image(wrist_image(), "rgb8"))
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        good_joints = fixed_joints(BUNDLE_JOINTS, Q)
        peer.set_camera("wrist", good_wrist, 30.0)
        peer.set_camera("exterior", _bad_image_cases()["wrong_encoding"], 30.0)
        peer.set_joints(good_joints, 100.0)
        assert peer.wait_for_node(15.0)
        cases: list[tuple[str, str, Callable[[], None]]] = []
        for name, factory in _bad_image_cases().items():
            cases.append(
                (name, "bad_images", functools.partial(peer.set_camera, "exterior", factory))
            )
        for name, jfactory in _bad_joint_cases().items():
            cases.append((name, "bad_joint_states", functools.partial(peer.set_joints, jfactory)))

        for name, counter, install in cases:
            # Inputs paused around the reset: the bad stream's first message is the first one
            # the node sees of that input after it.
            peer.pause("exterior", "joints")
            peer.wait_for(lambda: False, 0.1)
            peer.set_camera("exterior", good_ext, 30.0)
            peer.set_joints(good_joints, 100.0)
            assert peer.reset().success
            t0 = peer.mark()
            install()
            peer.resume("exterior", "joints")
            before = status_now(peer)
            # The reset's hold (one point) may arrive after its answer: only chunks count here.
            got = quiet(peer, t0, QUIET_WINDOW, chunks_only=True)
            assert got == [], (
                f"{name}: {len(got)} trajectories published: {[(stamp_seconds(g.header.stamp) - t0, len(g.points)) for g in got]} {peer.statuses_since(t0)[-1]}"
            )
            after = status_now(peer)
            assert getattr(after, counter) > getattr(before, counter), (
                f"{name}: {counter} not counted: {after}"
            )
            assert after.state in (
                PolicyStatus.STATE_WAITING,
                PolicyStatus.STATE_STALE,
            ), f"{name}: {after}"

        # Bad messages interleaved with good ones: the good ones keep the node going, unchanged.
        white = raw_image(uniform_rgb(32, 32, (255, 255, 255)), "rgb8")
        big = raw_image(uniform_rgb(40, 30, (255, 255, 255)), "rgb8")
        good_msg = raw_image(ext_image(), "rgb8")
        last_good: list[Time] = [Time()]
        # Own counters: each sequence starts with a good message after the reset, so the first
        # frame fixes the camera's size at 32x32 and the first joint state is a good one.
        ext_calls = itertools.count()
        joint_calls = itertools.count()

        def mixed_ext(_i: int, now: Time) -> Image:
            i = next(ext_calls)
            k = i % 5
            if k in (0, 2):
                good_msg.header.stamp = now
                last_good[0] = now
                return good_msg
            m = raw_image(uniform_rgb(32, 32, (255, 255, 255)), "rgb8")
            m.header.stamp = now
            if k == 1:
                m.encoding = "yuv422"
            elif k == 3:
                m.data = bytes(m.data)[:100]
            else:
                # Alternately a replayed stamp and a size change, both carrying other pixels.
                m = white if (i // 5) % 2 == 0 else big
                m.header.stamp = last_good[0] if m is white else now
            return m

        other_q = [0.9] * len(Q)

        def mixed_joints(_i: int, now: Time) -> JointState:
            k = next(joint_calls) % 5
            if k in (0, 2):
                return joint_state(BUNDLE_JOINTS, Q, now)
            if k == 1:
                return joint_state(BUNDLE_JOINTS, [math.nan] + other_q[1:], now)
            if k == 3:
                return joint_state(BUNDLE_JOINTS[1:], other_q[1:], now)
            return joint_state(BUNDLE_JOINTS, other_q, time_of(stamp_seconds(now) - 0.01))

        peer.pause("exterior", "joints")
        peer.wait_for(lambda: False, 0.1)
        assert peer.reset().success
        peer.set_camera("exterior", mixed_ext, 60.0)
        peer.set_joints(mixed_joints, 250.0)
        peer.resume("exterior", "joints")
        t0 = peer.mark()
        before = status_now(peer)
        wait_matching(peer, exp, t0)
        trajectories = wait_trajectories(peer, t0, 3)
        errors = [trajectory_error(t, exp) for t in trajectories]
        assert max(errors) < TOL, errors
        after = status_now(peer)
        assert (
            after.bad_images > before.bad_images
            and after.bad_joint_states > before.bad_joint_states
        )
        assert after.state == PolicyStatus.STATE_RUNNING, after


def test_stale_camera_holds_then_resumes() -> None:
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0)
        t0 = peer.mark()
        peer.pause("exterior")

        def hold() -> JointTrajectory | None:
            for t in peer.trajectories_since(t0):
                if len(t.points) == 1 and np.allclose(t.points[0].positions, Q, atol=1e-12):
                    return t
            return None

        held = peer.wait_for(hold, 3.0)
        assert held is not None, [len(t.points) for t in peer.trajectories_since(t0)]
        assert np.allclose(held.points[0].velocities, 0.0)
        s = peer.wait_for_status(lambda s: s.state == PolicyStatus.STATE_STALE, 2.0, since=t0)
        assert s is not None, peer.latest_status()
        assert s.state_name == "STALE" and "exterior" in s.detail
        assert s.stale_observations >= 1
        # Nothing but the hold while stale.
        t1 = peer.mark()
        assert quiet(peer, t1, 1.0) == []

        t2 = peer.mark()
        peer.resume("exterior")
        wait_matching(peer, exp, t2)
        wait_status(peer, lambda s: s.state == PolicyStatus.STATE_RUNNING, "RUNNING", since=t2)


def test_stale_joint_states_hold_then_resume() -> None:
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}) as (node, peer):
        start_constant(peer, node)
        wait_matching(peer, exp, 0.0)
        t0 = peer.mark()
        peer.pause("joints")
        s = peer.wait_for_status(lambda s: s.state == PolicyStatus.STATE_STALE, 2.0, since=t0)
        assert s is not None, peer.latest_status()
        assert "joint states" in s.detail
        held = [t for t in peer.trajectories_since(t0) if len(t.points) == 1]
        assert held, "no hold trajectory when the joint states went stale"
        assert np.allclose(held[-1].points[0].positions, Q, atol=1e-12)
        assert s.stale_observations >= 1
        t1 = peer.mark()
        peer.resume("joints")
        wait_matching(peer, exp, t1)


def _limits(**overrides: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "joint_names": list(BUNDLE_JOINTS),
        "joint_limits.lower": [-3.0] * 7,
        "joint_limits.upper": [3.0] * 7,
        "joint_limits.max_velocity": [5.0] * 7,
        "joint_limits.max_jump": 0.5,
    }
    limits.update(overrides)
    return limits


def test_safety_tiny_max_jump_refuses_every_chunk() -> None:
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, **_limits()}
    params["joint_limits.max_jump"] = 0.001
    with running(params) as (node, peer):
        start_constant(peer, node)
        s = wait_status(peer, lambda s: s.safety_rejections > 0, "safety_rejections > 0", 5.0)
        assert quiet(peer, 0.0, 1.0) == []
        assert peer.chunks_since() == []
        assert s.chunks_published == 0 and s.inferences >= s.safety_rejections
        assert node.running()


def test_safety_limits_clamp_positions() -> None:
    q = (0.0, -0.1, 0.2, -0.5, 0.0, 1.0, 0.0)
    lower = [-2.9, -1.8, -2.9, -3.0, -2.9, -0.1, 0.0]
    upper = [0.08, 1.8, 2.9, 0.0, 2.9, 3.7, 0.04]
    params = {
        "instruction": INSTRUCTION,
        "enabled_at_start": True,
        # Every trajectory is compared with the model's clamped chunk: no boundary blending
        # (`prefix`, the default, inpaints the second chunk from the first).
        "boundary_mode": "replace",
        **_limits(**{"joint_limits.lower": lower, "joint_limits.upper": upper}),
    }
    # The safety layer checks the velocity of the whole commanded spline (anchor included), which
    # peaks a little above the points' own velocities: leave the gripper room.
    params["joint_limits.max_velocity"] = [2.0, 2.0, 2.0, 2.0, 2.5, 2.5, 1.0]
    params["joint_limits.max_jump"] = 0.3
    unclamped = expected_for(q, [ext_image(), wrist_image()], INSTRUCTION)
    assert unclamped.actions[:, 0].max() > upper[0] and unclamped.actions[:, 6].max() > upper[6]
    exp = expected_for(q, [ext_image(), wrist_image()], INSTRUCTION, lower, upper)
    with running(params) as (node, peer):
        start_constant(peer, node, q=q)
        wait_matching(peer, exp, 0.0)
        trajectories = wait_trajectories(peer, 0.0, 2)
        for traj in trajectories:
            _, pos, _ = trajectory_arrays(traj)
            assert np.all(pos >= np.asarray(lower) - 1e-12) and np.all(
                pos <= np.asarray(upper) + 1e-12
            )
            assert trajectory_error(traj, exp) < TOL
        s = status_now(peer)
        assert s.safety_rejections == 0


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"sync_slop_s": -1.0}, "sync_slop_s"),
        ({"providers": ["rocm"]}, "providers"),
        ({"camera_names": ["exterior", "thermal"], "camera_topics": ["/a", "/b"]}, "camera_names"),
        ({"camera_transport": "h264"}, "camera_transport"),
        ({"joint_limits.lower": [0.0] * 7}, "joint_limits"),
    ],
    ids=["sync_slop_s", "providers", "camera_names", "camera_transport", "joint_limits"],
)
def test_bad_parameter_exits_naming_it(params: dict[str, Any], name: str) -> None:
    base: dict[str, Any] = {}
    if "camera_names" not in params:
        base.update(PeerTopics().node_params())
    base.update(params)
    with NodeProcess(base, next_domain(), binary=NODE_BIN) as node:
        code = node.wait(20.0)
        assert code != 0
        assert f"parameter `{name}`" in node.stderr, node.stderr_tail()


def test_compressed_png_transport() -> None:
    topics = PeerTopics(compressed=True)
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    with running({"instruction": INSTRUCTION, "enabled_at_start": True}, topics) as (node, peer):
        start_constant(peer, node)
        chunk = wait_matching(peer, exp, 0.0)
        check_predicted(peer, chunk, exp)
        before = status_now(peer)
        assert before.bad_images == 0

        # Bytes that are no image are refused and counted.
        garbage = compressed_image(ext_image(), frame_id="exterior")
        garbage.data = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8
        peer.set_camera("exterior", fixed_frame(garbage), 30.0)
        wait_status(peer, lambda s: s.bad_images > before.bad_images, "bad_images", since=0.0)


def test_cameras_of_different_sizes_publish_frames_at_their_own_size() -> None:
    """models/wam_test_mixed (format 2; exterior 8x8, wrist 4x6; tests/wam_testmodel/mixed.py): the
    node brings each camera's 32x32 images to that camera's own size, feeds each to its own encode
    input, and publishes each camera's predicted frames at its own size, with the bundle's answer
    (a uniform image comes back as its value); the preview tiles them at the larger size."""
    params = {
        "bundle_path": str(REPO / "models" / "wam_test_mixed"),
        "joint_names": ["joint1", "joint2"],
        # The bundle's actions do not start at the measured state: wide limits, as for the 7-joint
        # test bundle.
        "joint_limits.lower": [-100.0, -100.0],
        "joint_limits.upper": [100.0, 100.0],
        "joint_limits.max_velocity": [1000.0, 1000.0],
        "joint_limits.max_jump": 100.0,
        "dry_run": True,
        "enabled_at_start": True,
        "instruction": "pick cube",
    }
    pixels = {"exterior": 230, "wrist": 160}
    sizes = {"exterior": (8, 8), "wrist": (6, 4)}
    with running(params) as (node, peer):
        images = {c: np.full((32, 32, 3), p, np.uint8) for c, p in pixels.items()}
        start_constant(peer, node, (0.2, 0.4), images, names=("joint1", "joint2"))
        for cam, pixel in pixels.items():
            # Normalized (x / 255 - 0.5) / 0.5, decoded as is: a pixel value in [0, 1].
            want = round((2 * pixel / 255 - 1) * 255)

            def frame(cam: str = cam) -> Image | None:
                got = peer.predicted_since(cam)
                return got[-1] if got else None

            msg = peer.wait_for(frame, 10.0)
            assert msg is not None, f"no predicted frame of {cam}"
            assert (msg.width, msg.height) == sizes[cam], (cam, msg.width, msg.height)
            err = np.abs(predicted_u8(msg) - want).max()
            assert err <= 1, f"{cam}: predicted pixels off by {err} from {want}"
        preview = peer.wait_for(lambda: (p := peer.previews_since(0.0)) and p[-1] or None, 5.0)
        assert preview is not None, "no preview"
        assert (preview.width, preview.height) == (3 * 8, 2 * 8)
        assert node.running()
