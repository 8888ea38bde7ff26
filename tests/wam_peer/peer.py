"""A ROS 2 peer of the wam_policy node: an rclpy node in its own context and domain that feeds
the node's inputs from a background thread and records everything the node publishes."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar, Union

import rclpy
from builtin_interfaces.msg import Time
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from wam_policy.msg import ActionChunk, PolicyStatus

from .images import U8, compressed_image, raw_image

__all__ = [
    "CameraMsg",
    "FrameFactory",
    "JointFactory",
    "Received",
    "Peer",
    "PeerTopics",
    "SimClock",
    "stamp_seconds",
    "time_of",
    "fixed_frame",
    "joint_state",
    "fixed_joints",
]

CameraMsg = Union[Image, CompressedImage]
#: (frame index, stamp now) -> the message to publish (stamped by the factory), or None to skip.
FrameFactory = Callable[[int, Time], Union[CameraMsg, None]]
#: (message index, stamp now) -> the JointState to publish, or None to skip.
JointFactory = Callable[[int, Time], Union[JointState, None]]

T = TypeVar("T")


def stamp_seconds(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def time_of(seconds: float) -> Time:
    sec = int(seconds // 1)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def fixed_frame(template: CameraMsg) -> FrameFactory:
    """A factory that publishes ``template`` with the current stamp every time."""

    def make(_index: int, now: Time) -> CameraMsg:
        template.header.stamp = now
        return template

    return make


def joint_state(names: Sequence[str], positions: Sequence[float], stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(p) for p in positions]
    msg.velocity = []
    msg.effort = []
    return msg


def fixed_joints(names: Sequence[str], positions: Sequence[float]) -> JointFactory:
    """A factory that publishes the same positions with the current stamp every time."""
    template = joint_state(names, positions, Time())

    def make(_index: int, now: Time) -> JointState:
        template.header.stamp = now
        return template

    return make


class SimClock:
    """Simulated time for a node with ``use_sim_time``: ``start_s`` when made, then advancing with
    the wall clock. Pass ``SimClock().now_s`` as a :class:`Peer`'s ``clock``."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.start_s = start_s
        self._t0 = time.monotonic()

    def now_s(self) -> float:
        return self.start_s + (time.monotonic() - self._t0)


@dataclass(frozen=True)
class PeerTopics:
    """Topic names of one node configuration."""

    cameras: dict[str, str] = field(
        default_factory=lambda: {
            "exterior": "/cameras/exterior/image_raw",
            "wrist": "/cameras/wrist/image_raw",
        }
    )
    compressed: bool = False
    joint_states: str = "/joint_states"
    instruction: str = "/instruction"
    trajectory: str = "joint_trajectory"
    node: str = "/wam_policy"
    # Subscribe to the predicted frames and the preview from the start (else: `Peer.watch_frames`).
    watch_frames: bool = True

    def node_params(self) -> dict[str, object]:
        """The node parameters that select these topics."""
        return {
            "camera_names": list(self.cameras),
            "camera_topics": list(self.cameras.values()),
            "camera_transport": "compressed" if self.compressed else "raw",
            "joint_states_topic": self.joint_states,
            "instruction_topic": self.instruction,
            "trajectory_topic": self.trajectory,
        }


@dataclass
class Received(Generic[T]):
    """One received message and the monotonic time it arrived."""

    msg: T
    at: float


@dataclass
class _Stream:
    period: float
    next_due: float
    index: int = 0


class Peer:
    """rclpy peer in domain ``domain_id``. Use as a context manager.

    Feeding: ``set_camera(name, factory, rate_hz)``, ``set_joints(factory, rate_hz)``,
    ``set_instruction(text)`` (re-sent every ``instruction_period_s`` so that a late-discovered
    subscription gets it too), ``set_clock(rate_hz)`` (``rosgraph_msgs/Clock`` on /clock);
    ``pause(...)``/``resume(...)`` stop and restart streams. Every published camera stamp is
    recorded in ``sent_stamps[camera]``.

    Stamps: ``clock`` (seconds, e.g. :meth:`SimClock.now_s`) is the peer's time for every stamp it
    writes and for /clock; default the peer node's own clock (system time).

    Recording: ``trajectories``, ``chunks``, ``predicted[camera]``, ``previews``, ``statuses``
    (lists of :class:`Received`; read them under ``lock`` or through the ``*_since`` helpers).
    """

    def __init__(
        self,
        domain_id: int,
        topics: PeerTopics | None = None,
        *,
        name: str = "wam_peer",
        instruction_period_s: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.domain_id = domain_id
        self._clock = clock
        self.topics = topics or PeerTopics()
        self.lock = threading.RLock()
        self.trajectories: list[Received[JointTrajectory]] = []
        self.chunks: list[Received[ActionChunk]] = []
        self.predicted: dict[str, list[Received[Image]]] = {c: [] for c in self.topics.cameras}
        self.previews: list[Received[Image]] = []
        self.statuses: list[Received[PolicyStatus]] = []
        self.sent_stamps: dict[str, list[float]] = {c: [] for c in self.topics.cameras}
        self.sent_joint_states = 0
        self.publish_errors: list[str] = []

        self._camera_factories: dict[str, FrameFactory] = {}
        self._camera_streams: dict[str, _Stream] = {}
        self._joint_factory: JointFactory | None = None
        self._joint_stream: _Stream | None = None
        self._instruction: str | None = None
        self._instruction_stream = _Stream(instruction_period_s, 0.0)
        self._clock_stream: _Stream | None = None
        self._clock_pub: Publisher | None = None
        self._paused: set[str] = set()
        self._feed_stop = threading.Event()
        self._feed_wake = threading.Event()

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node: Node = rclpy.create_node(name, context=self.context)
        reliable = QoSProfile(depth=100)
        n = self.node
        msg_type: type[Image] | type[CompressedImage]
        msg_type = CompressedImage if self.topics.compressed else Image
        suffix = "/compressed" if self.topics.compressed else ""
        self._camera_pubs: dict[str, Publisher] = {
            cam: n.create_publisher(msg_type, topic + suffix, qos_profile_sensor_data)
            for cam, topic in self.topics.cameras.items()
        }
        self._joint_pub = n.create_publisher(
            JointState, self.topics.joint_states, qos_profile_sensor_data
        )
        self._instruction_pub = n.create_publisher(String, self.topics.instruction, 10)
        node_ns = self.topics.node
        n.create_subscription(
            JointTrajectory, self._resolve(self.topics.trajectory), self._on_trajectory, reliable
        )
        n.create_subscription(ActionChunk, f"{node_ns}/action_chunk", self._on_chunk, reliable)
        if self.topics.watch_frames:
            self.watch_frames()
        n.create_subscription(PolicyStatus, f"{node_ns}/status", self._on_status, reliable)
        self._enable_client = n.create_client(SetBool, f"{node_ns}/enable")
        self._reset_client = n.create_client(Trigger, f"{node_ns}/reset")

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._spin_thread = threading.Thread(target=self._spin, name="wam_peer_spin", daemon=True)
        self._feed_thread = threading.Thread(target=self._feed, name="wam_peer_feed", daemon=True)
        self._spin_thread.start()
        self._feed_thread.start()

    @staticmethod
    def _resolve(topic: str) -> str:
        # The node has no namespace: a relative topic resolves under /.
        return topic if topic.startswith("/") else "/" + topic

    # ---------------------------------------------------------------------------------------------
    # Lifetime

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._feed_stop.set()
        self._feed_wake.set()
        self._feed_thread.join(timeout=5.0)
        try:
            self.executor.shutdown(timeout_sec=2.0)
        finally:
            self.node.destroy_node()
            self.context.try_shutdown()
            self._spin_thread.join(timeout=5.0)

    def watch_frames(self) -> None:
        """Subscribes to the node's predicted frames and preview (a node with `video_decode:
        on_demand` decodes while someone does)."""
        reliable = QoSProfile(depth=100)
        node_ns = self.topics.node
        with self.lock:
            for cam in self.topics.cameras:
                self.node.create_subscription(
                    Image,
                    f"{node_ns}/predicted/{cam}",
                    functools.partial(self._on_predicted, cam),
                    reliable,
                )
            self.node.create_subscription(Image, f"{node_ns}/preview", self._on_preview, reliable)

    def _spin(self) -> None:
        try:
            while self.context.ok() and not self._feed_stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as e:  # noqa: BLE001 - shutdown races end the thread quietly
            if self.context.ok() and not self._feed_stop.is_set():
                self.publish_errors.append(f"spin: {e!r}")

    def now(self) -> Time:
        """The peer's clock (``clock``, default system time), as a message stamp."""
        if self._clock is not None:
            return time_of(self._clock())
        stamp: Time = self.node.get_clock().now().to_msg()
        return stamp

    def now_s(self) -> float:
        return stamp_seconds(self.now())

    # ---------------------------------------------------------------------------------------------
    # Feeding

    def set_camera(self, camera: str, factory: FrameFactory, rate_hz: float = 25.0) -> None:
        """Publishes ``factory(index, now)`` on ``camera``'s topic at ``rate_hz``."""
        if camera not in self._camera_pubs:
            raise KeyError(f"unknown camera {camera!r}")
        with self.lock:
            self._camera_factories[camera] = factory
            old = self._camera_streams.get(camera)
            self._camera_streams[camera] = _Stream(
                1.0 / rate_hz, time.monotonic(), old.index if old else 0
            )
        self._feed_wake.set()

    def set_cameras(self, factories: dict[str, FrameFactory], rate_hz: float = 25.0) -> None:
        for camera, factory in factories.items():
            self.set_camera(camera, factory, rate_hz)

    def set_joints(self, factory: JointFactory, rate_hz: float = 200.0) -> None:
        """Publishes ``factory(index, now)`` on the joint states topic at ``rate_hz``."""
        with self.lock:
            self._joint_factory = factory
            old = self._joint_stream
            self._joint_stream = _Stream(1.0 / rate_hz, time.monotonic(), old.index if old else 0)
        self._feed_wake.set()

    def set_instruction(self, text: str | None) -> None:
        """Publishes ``text`` now and then periodically (None: stop)."""
        with self.lock:
            self._instruction = text
            self._instruction_stream.next_due = time.monotonic()
        self._feed_wake.set()

    def publish_instruction_once(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def set_clock(self, rate_hz: float = 100.0) -> None:
        """Publishes :meth:`now` on /clock at ``rate_hz`` (stream name "clock")."""
        with self.lock:
            if self._clock_pub is None:
                self._clock_pub = self.node.create_publisher(Clock, "/clock", 10)
            self._clock_stream = _Stream(1.0 / rate_hz, time.monotonic())
        self._feed_wake.set()

    def pause(self, *streams: str) -> None:
        """Stops streams by name: a camera name, "joints", "instruction" or "clock"."""
        with self.lock:
            self._paused.update(streams)

    def resume(self, *streams: str) -> None:
        with self.lock:
            self._paused.difference_update(streams)
            now = time.monotonic()
            for s in streams:
                if s in self._camera_streams:
                    self._camera_streams[s].next_due = now
                elif s == "joints" and self._joint_stream is not None:
                    self._joint_stream.next_due = now
                elif s == "clock" and self._clock_stream is not None:
                    self._clock_stream.next_due = now
        self._feed_wake.set()

    def feed_constant(
        self,
        images: Mapping[str, U8],
        positions: Sequence[float],
        names: Sequence[str],
        *,
        encoding: str = "rgb8",
        pad: int = 0,
        camera_rate_hz: float = 30.0,
        joint_rate_hz: float = 100.0,
    ) -> None:
        """Streams the same image per camera (raw ``encoding`` with ``pad`` bytes of row padding,
        or PNG on a compressed transport) and the same joint positions, freshly stamped."""
        for cam, rgb in images.items():
            msg: CameraMsg
            if self.topics.compressed:
                msg = compressed_image(rgb, frame_id=cam)
            else:
                msg = raw_image(rgb, encoding, pad, frame_id=cam)
            self.set_camera(cam, fixed_frame(msg), camera_rate_hz)
        self.set_joints(fixed_joints(names, positions), joint_rate_hz)

    def stop_feeding(self) -> None:
        """Removes every camera and joint stream and the instruction."""
        with self.lock:
            self._camera_factories.clear()
            self._camera_streams.clear()
            self._joint_factory = None
            self._joint_stream = None
            self._instruction = None

    def _feed(self) -> None:
        while not self._feed_stop.is_set():
            now = time.monotonic()
            next_due = now + 0.05
            with self.lock:
                jobs: list[Callable[[], None]] = []
                for cam, stream in self._camera_streams.items():
                    if cam in self._paused:
                        continue
                    if stream.next_due <= now:
                        jobs.append(self._camera_job(cam, stream.index))
                        stream.index += 1
                        stream.next_due = max(stream.next_due + stream.period, now)
                    next_due = min(next_due, stream.next_due)
                js = self._joint_stream
                if js is not None and "joints" not in self._paused:
                    if js.next_due <= now:
                        jobs.append(self._joint_job(js.index))
                        js.index += 1
                        js.next_due = max(js.next_due + js.period, now)
                    next_due = min(next_due, js.next_due)
                cs = self._clock_stream
                if cs is not None and self._clock_pub is not None and "clock" not in self._paused:
                    if cs.next_due <= now:
                        jobs.append(functools.partial(self._publish_clock, self._clock_pub))
                        cs.next_due = max(cs.next_due + cs.period, now)
                    next_due = min(next_due, cs.next_due)
                ins = self._instruction_stream
                if self._instruction is not None and "instruction" not in self._paused:
                    if ins.next_due <= now:
                        message = String(data=self._instruction)
                        jobs.append(functools.partial(self._instruction_pub.publish, message))
                        ins.next_due = now + ins.period
                    next_due = min(next_due, ins.next_due)
            for job in jobs:
                try:
                    job()
                except Exception as e:  # noqa: BLE001 - reported to the test, never silent
                    if self._feed_stop.is_set():
                        return
                    self.publish_errors.append(repr(e))
            delay = next_due - time.monotonic()
            if delay > 0:
                self._feed_wake.wait(delay)
                self._feed_wake.clear()

    def _publish_clock(self, pub: Publisher) -> None:
        pub.publish(Clock(clock=self.now()))

    def _camera_job(self, cam: str, index: int) -> Callable[[], None]:
        factory = self._camera_factories[cam]
        pub = self._camera_pubs[cam]

        def run() -> None:
            msg = factory(index, self.now())
            if msg is None:
                return
            pub.publish(msg)
            with self.lock:
                self.sent_stamps[cam].append(stamp_seconds(msg.header.stamp))

        return run

    def _joint_job(self, index: int) -> Callable[[], None]:
        factory = self._joint_factory
        assert factory is not None

        def run() -> None:
            msg = factory(index, self.now())
            if msg is None:
                return
            self._joint_pub.publish(msg)
            self.sent_joint_states += 1

        return run

    # ---------------------------------------------------------------------------------------------
    # Recording

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.trajectories.append(Received(msg, time.monotonic()))

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self.lock:
            self.chunks.append(Received(msg, time.monotonic()))

    def _on_predicted(self, cam: str, msg: Image) -> None:
        with self.lock:
            self.predicted[cam].append(Received(msg, time.monotonic()))

    def _on_preview(self, msg: Image) -> None:
        with self.lock:
            self.previews.append(Received(msg, time.monotonic()))

    def _on_status(self, msg: PolicyStatus) -> None:
        with self.lock:
            self.statuses.append(Received(msg, time.monotonic()))

    @staticmethod
    def _since(items: list[Received[T]], t: float) -> list[T]:
        return [r.msg for r in items if r.at >= t]

    def trajectories_since(self, t: float = 0.0) -> list[JointTrajectory]:
        with self.lock:
            return self._since(self.trajectories, t)

    def chunks_since(self, t: float = 0.0) -> list[ActionChunk]:
        with self.lock:
            return self._since(self.chunks, t)

    def predicted_since(self, camera: str, t: float = 0.0) -> list[Image]:
        with self.lock:
            return self._since(self.predicted[camera], t)

    def previews_since(self, t: float = 0.0) -> list[Image]:
        with self.lock:
            return self._since(self.previews, t)

    def statuses_since(self, t: float = 0.0) -> list[PolicyStatus]:
        with self.lock:
            return self._since(self.statuses, t)

    def latest_status(self) -> PolicyStatus | None:
        with self.lock:
            return self.statuses[-1].msg if self.statuses else None

    @staticmethod
    def mark() -> float:
        """A point in time for the ``*_since`` helpers."""
        return time.monotonic()

    # ---------------------------------------------------------------------------------------------
    # Waiting and services

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.01) -> T | None:
        """Polls ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes
        (None)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def wait_for_status(
        self, predicate: Callable[[PolicyStatus], bool], timeout: float, since: float | None = None
    ) -> PolicyStatus | None:
        """The first status received after ``since`` (default: now) that satisfies
        ``predicate``."""
        start = self.mark() if since is None else since

        def find() -> PolicyStatus | None:
            for s in self.statuses_since(start):
                if predicate(s):
                    return s
            return None

        return self.wait_for(find, timeout)

    def wait_for_node(self, timeout: float = 10.0) -> bool:
        """Waits until the node is discovered both ways: its status reaches us and our camera
        and joint publishers have its subscriptions."""

        def ready() -> bool:
            if self.latest_status() is None:
                return False
            pubs = list(self._camera_pubs.values()) + [self._joint_pub]
            return all(p.get_subscription_count() > 0 for p in pubs)

        return bool(self.wait_for(ready, timeout, interval=0.02))

    def _call(self, client: Client, request: object, timeout: float) -> object:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout} s")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise TimeoutError(f"service {client.srv_name} did not answer in {timeout} s")
        return future.result()

    def enable(self, value: bool = True, timeout: float = 5.0) -> SetBool.Response:
        response = self._call(self._enable_client, SetBool.Request(data=value), timeout)
        assert isinstance(response, SetBool.Response)
        return response

    def reset(self, timeout: float = 5.0) -> Trigger.Response:
        response = self._call(self._reset_client, Trigger.Request(), timeout)
        assert isinstance(response, Trigger.Response)
        return response
