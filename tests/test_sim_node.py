"""The wam_sim ROS 2 node as a subprocess against an rclpy peer (real Fast DDS over loopback)."""

from __future__ import annotations

import itertools
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
            lambda: proc.proc.poll() is not None
            or (len(peer.joints) > 10 and all(peer.images.values())),
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
