"""The wam_sim ROS 2 node as a subprocess against an rclpy peer (real Fast DDS over loopback)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.srv", reason="needs the package's services: source scripts/env.sh")

from builtin_interfaces.msg import Duration  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from wam_sim import CAMERA_NAMES, JOINT_NAMES  # noqa: E402
from wam_sim.client import EpisodeClient  # noqa: E402
from wam_sim.perturb import Perturbation, occlusion_box  # noqa: E402
from wam_sim.urdf import arm_urdf  # noqa: E402

# Domains 61..80 (tests/test_node_ros.py counts up from a pid-derived base at the low end).
_domains = itertools.count()


@pytest.fixture(autouse=True)
def domain_id() -> int:
    return 61 + (os.getpid() + next(_domains)) % 20


class SimProcess:
    """``python -m wam_sim.node`` in its own domain."""

    def __init__(self, domain: int, params: dict[str, Any] | None = None) -> None:
        args = [sys.executable, "-m", "wam_sim.node", "--ros-args"]
        for k, v in (params or {}).items():
            args += ["-p", f"{k}:={v}"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        out = self.proc.stdout.read() if self.proc.stdout else b""
        return out.decode(errors="replace")


class Peer:
    """An rclpy node recording what the sim publishes."""

    def __init__(self, domain: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("sim_test_peer", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.joints: list[tuple[float, JointState]] = []
        self.desired: list[JointState] = []
        self.images: dict[str, list[tuple[float, Image]]] = {c: [] for c in CAMERA_NAMES}
        self.instructions: list[str] = []
        self.descriptions: list[str] = []
        self.perturbations: list[dict[str, Any]] = []
        # Best effort like the publisher, but a deep queue: a busy peer counts every message.
        sensor = QoSProfile(depth=500, reliability=ReliabilityPolicy.BEST_EFFORT)
        n = self.node
        n.create_subscription(
            JointState, "/joint_states", lambda m: self.joints.append((time.monotonic(), m)), sensor
        )
        n.create_subscription(
            JointState, "/wam_sim/desired_state", lambda m: self.desired.append(m), sensor
        )
        for c in CAMERA_NAMES:
            n.create_subscription(
                Image,
                f"/cameras/{c}/image_raw",
                lambda m, c=c: self.images[c].append((time.monotonic(), m)),
                sensor,
            )
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        n.create_subscription(
            String, "/instruction", lambda m: self.instructions.append(m.data), latched
        )
        n.create_subscription(
            String, "/robot_description", lambda m: self.descriptions.append(m.data), latched
        )
        n.create_subscription(
            String,
            "/wam_sim/perturbation",
            lambda m: self.perturbations.append(json.loads(m.data)),
            latched,
        )
        self.traj_pub = n.create_publisher(JointTrajectory, "/joint_trajectory", 10)
        self.episodes = EpisodeClient(n, timeout_s=10.0, spin=False)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return pred()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs a blocking service call while this thread keeps spinning."""
        import threading

        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(r=fn()))
        t.start()
        while t.is_alive():
            self.executor.spin_once(timeout_sec=0.01)
        t.join()
        return box["r"]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def sim(domain_id: int) -> Iterator[tuple[SimProcess, Peer]]:
    proc = SimProcess(domain_id, {"seed": 5, "instruction": "touch the red cube"})
    peer = Peer(domain_id)
    try:
        ok = peer.spin_until(
            lambda: (
                proc.proc.poll() is not None
                or (len(peer.joints) > 10 and all(peer.images.values()))
            ),
            30.0,
        )
        ok = ok and proc.proc.poll() is None
        if not ok:
            peer.close()
            pytest.fail(f"sim node published nothing:\n{proc.stop()}")
        yield proc, peer
    finally:
        peer.close()
        proc.stop()


def latest_q(peer: Peer) -> np.ndarray:
    msg = peer.joints[-1][1]
    return np.array([msg.position[list(msg.name).index(j)] for j in JOINT_NAMES])


def test_topics_and_rates(sim: tuple[SimProcess, Peer]) -> None:
    _, peer = sim
    peer.joints.clear()
    for v in peer.images.values():
        v.clear()
    peer.spin_for(3.0)
    js_rate = len(peer.joints) / 3.0
    cam_rates = {c: len(v) / 3.0 for c, v in peer.images.items()}
    print(f"joint states {js_rate:.0f} Hz, cameras {cam_rates}")
    assert js_rate >= 50.0
    assert all(r >= 5.0 for r in cam_rates.values()), cam_rates
    js = peer.joints[-1][1]
    assert list(js.name) == JOINT_NAMES
    assert len(js.position) == 7 and len(js.velocity) == 7
    for c in CAMERA_NAMES:
        img = peer.images[c][-1][1]
        assert (img.height, img.width, img.encoding, img.step) == (64, 64, "rgb8", 192)
        assert img.header.frame_id == c
        arr = np.frombuffer(bytes(img.data), np.uint8).reshape(64, 64, 3)
        assert arr.std() > 5.0
    assert peer.desired and list(peer.desired[-1].name) == JOINT_NAMES
    assert peer.spin_until(lambda: "touch the red cube" in peer.instructions, 5.0)
    # Published once at start-up and latched: the peer has it whenever it joined.
    assert peer.spin_until(lambda: bool(peer.descriptions), 5.0)
    assert peer.descriptions == [arm_urdf()]


def test_trajectory_is_followed(sim: tuple[SimProcess, Peer]) -> None:
    _, peer = sim
    q0 = latest_q(peer)
    goal = q0.copy()
    goal[0] += 0.3
    goal[3] += 0.2
    goal[6] = 0.01
    msg = JointTrajectory()
    msg.joint_names = list(reversed(JOINT_NAMES))  # matched by name
    for k in (1, 2):
        p = JointTrajectoryPoint()
        q = q0 + (goal - q0) * k / 2
        p.positions = list(reversed(q.tolist()))
        p.time_from_start = Duration(sec=0, nanosec=int(k * 0.5e9))
        msg.points.append(p)
    peer.traj_pub.publish(msg)
    assert peer.spin_until(lambda: np.abs(latest_q(peer) - goal).max() < 0.02, 8.0), (
        latest_q(peer),
        goal,
    )
    des = peer.desired[-1]
    np.testing.assert_allclose(np.array(des.position), goal, atol=1e-9)


def test_reset_and_result(sim: tuple[SimProcess, Peer]) -> None:
    _, peer = sim
    res = peer.call(lambda: peer.episodes.result())
    assert res.instruction == "touch the red cube" and res.task_family == "reach"
    assert res.elapsed_s > 0.0 and res.gripper_to_object_m > 0.1 and not res.success
    assert res.object_to_goal_m == 0.0
    peer.instructions.clear()
    r = peer.call(lambda: peer.episodes.reset(7, "push the blue cube to the yellow zone"))
    assert r.success and r.instruction == "push the blue cube to the yellow zone", r.message
    assert peer.spin_until(
        lambda: "push the blue cube to the yellow zone" in peer.instructions, 5.0
    )
    res = peer.call(lambda: peer.episodes.result())
    assert res.task_family == "push" and res.elapsed_s < 2.0 and res.object_to_goal_m > 0.05
    bad = peer.call(lambda: peer.episodes.reset(1, "dance"))
    assert not bad.success and "unknown instruction" in bad.message


def test_bad_parameter_refused(domain_id: int) -> None:
    proc = SimProcess(domain_id, {"image_width": 0})
    try:
        assert proc.proc.wait(timeout=30) != 0
    finally:
        out = proc.stop()
    assert "image_width" in out


# Frames stamped this long after a perturbation's record show it (the physics thread may run
# behind the wall clock by up to its catch-up limit, 0.1 s, on a loaded machine).
LAG_S = 0.2


def _pixels(msg: Image) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def _stamp_s(msg: Image) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _move_joint1(peer: Peer, q0: np.ndarray, by: float) -> np.ndarray:
    goal = q0.copy()
    goal[0] += by
    msg = JointTrajectory()
    msg.joint_names = list(JOINT_NAMES)
    p = JointTrajectoryPoint()
    p.positions = goal.tolist()
    p.time_from_start = Duration(sec=0, nanosec=600_000_000)
    msg.points.append(p)
    peer.traj_pub.publish(msg)
    return goal


def _perturbed_episode(peer: Peer, p: Perturbation | None, seed: int = 5) -> dict[str, Any] | None:
    """Sets the perturbation parameters, resets, and waits for the perturbation's record."""
    peer.call(lambda: peer.episodes.set_perturbation(p))
    peer.perturbations.clear()
    t0 = time.time()
    r = peer.call(lambda: peer.episodes.reset(seed, "touch the red cube"))
    assert r.success, r.message
    if p is None:
        assert "perturbation" not in r.message
        peer.spin_for(1.0)
        assert peer.perturbations == []
        return None
    assert f"perturbation {p.describe()}" in r.message
    assert peer.spin_until(lambda: bool(peer.perturbations), 10.0)
    event = peer.perturbations[-1]
    assert (event["kind"], event["camera"], event["time_s"]) == (p.kind, p.camera, p.time_s)
    assert event["episode_time_s"] == pytest.approx(p.time_s, abs=0.003)  # to the physics step
    assert t0 + p.time_s - 0.1 < event["stamp_s"] < time.time()
    assert event["seed"] == seed and event["instruction"] == "touch the red cube"
    return event


def test_perturbations_through_the_parameters(sim: tuple[SimProcess, Peer]) -> None:
    proc, peer = sim
    # camera_frozen: the wrist camera keeps its last image under new stamps while the arm moves.
    event = _perturbed_episode(peer, Perturbation("camera_frozen", 0.5, "wrist"))
    assert event is not None
    for v in peer.images.values():
        v.clear()
    _move_joint1(peer, latest_q(peer), 0.4)
    peer.spin_for(1.5)
    # Frames are rendered from the physics' state: allow it to lag the wall clock a little.
    after = event["stamp_s"] + LAG_S
    wrist = [m for _, m in peer.images["wrist"] if _stamp_s(m) > after]
    ext = [m for _, m in peer.images["exterior"] if _stamp_s(m) > after]
    assert len(wrist) >= 5 and len(ext) >= 5
    stamps = [_stamp_s(m) for m in wrist]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert all(np.array_equal(_pixels(m), _pixels(wrist[0])) for m in wrist)
    assert not np.array_equal(_pixels(ext[0]), _pixels(ext[-1]))  # the arm did move

    # camera_occluded: a black box over the exterior image from then on.
    event = _perturbed_episode(peer, Perturbation("camera_occluded", 0.2, "exterior"))
    assert event is not None
    rows, cols = occlusion_box(64, 64)
    after = event["stamp_s"] + LAG_S
    assert peer.spin_until(lambda: _stamp_s(peer.images["exterior"][-1][1]) > after, 5.0)
    img = _pixels(peer.images["exterior"][-1][1])
    assert not img[rows, cols].any() and img.std() > 5.0

    # arm_blocked: the follower takes the command (desired state), the arm stays where it was.
    _perturbed_episode(peer, Perturbation("arm_blocked", 0.0))
    peer.spin_for(0.2)
    q0 = latest_q(peer)
    goal = _move_joint1(peer, q0, 0.4)
    peer.spin_for(1.5)
    assert np.abs(latest_q(peer) - q0).max() < 0.005
    np.testing.assert_allclose(np.array(peer.desired[-1].position), goal, atol=1e-9)

    # cube_removed: the episode result sees the cube gone (out of reach).
    _perturbed_episode(peer, Perturbation("cube_removed", 0.1))
    res = peer.call(lambda: peer.episodes.result())
    assert res.gripper_to_object_m > 1.5 and not res.success

    # A bad value is refused when set; none: an episode without a perturbation record.
    refused = peer.call(lambda: peer.episodes.set_parameters({"perturbation": "cube_exploded"}))
    assert refused[0] and "cube_exploded" in refused[0]
    refused = peer.call(lambda: peer.episodes.set_parameters({"perturbation_time_s": -1.0}))
    assert refused[0]
    _perturbed_episode(peer, None)
    q0 = latest_q(peer)
    goal = _move_joint1(peer, q0, 0.3)
    assert peer.spin_until(lambda: np.abs(latest_q(peer) - goal).max() < 0.02, 5.0)
    assert "perturbation camera_frozen (wrist) applied at episode time 0.50" in proc.stop()
