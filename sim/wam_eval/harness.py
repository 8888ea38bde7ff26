"""Closed-loop harness: the wam_sim node and the real wam_policy node binary as subprocesses,
driven episode after episode through their services.

One episode: ``/wam_sim/reset_episode(seed, instruction)`` -> ``/wam_policy/reset`` ->
``/wam_policy/enable true`` -> poll ``/wam_sim/episode_result`` until success or the task family's
longest time -> ``/wam_policy/enable false``. The record holds the sim's outcome, the node's
own figures (deltas of ``/wam_policy/status``, chunk latencies from ``/wam_policy/action_chunk``)
and the follower's measurements from ``/wam_sim/desired_state``.

A perturbed episode (wam_sim.perturb) sets the sim's ``perturbation*`` parameters before the reset;
the record's ``perturbation`` is what the sim published on ``/wam_sim/perturbation`` when it
applied it (episode, /clock and ROS time), so a monitor's reaction can be timed against it.

Usage::

    with ClosedLoop(bundle=Path("models/wam_sim"), domain_id=90) as loop:
        record = loop.run_episode(10000, "touch the red cube")
        moved = loop.run_episode(
            10001, "touch the red cube", perturbation=Perturbation("cube_moved", 2.0)
        )
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.srv import SetParameters
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory
from wam_policy.msg import ActionChunk, PolicyStatus
from wam_policy.srv import GetEpisodeResult, ResetEpisode
from wam_sim.client import perturbation_parameters
from wam_sim.env import MAX_SECONDS, parse_instruction
from wam_sim.perturb import Perturbation
from wam_sim.scene import CAMERA_NAMES

from .procs import (
    REPO,
    SIM_POLICY_YAML,
    ManagedProcess,
    load_node_params,
    make_workdir,
    policy_process,
    remove_workdir,
    sim_process,
)
from .stats import TrajectoryKnots, boundary_velocity_jumps, follower_metrics, percentiles

__all__ = [
    "ClosedLoop",
    "EpisodeRecord",
    "HarnessError",
    "Perturbation",
    "policy_params",
    "stamp_seconds",
]

T = TypeVar("T")
# Seconds between two episode_result polls.
POLL_S = 0.1
# After ~/enable false, the node publishes a one-point hold 0.1 s ahead: let it finish before the
# sim is reset, so that it cannot pull the next episode's arm back.
SETTLE_S = 0.3
# How long to wait for the sim's record of a perturbation that was due before the episode ended.
PERTURBATION_RECORD_TIMEOUT_S = 2.0


class HarnessError(RuntimeError):
    """A closed-loop run failed; the message ends with the tails of both processes' logs."""


def stamp_seconds(t: Time) -> float:
    """A builtin_interfaces/Time in seconds."""
    return float(t.sec) + float(t.nanosec) * 1e-9


def policy_params(
    bundle: Path, overrides: Mapping[str, Any] | None = None, base: Path = SIM_POLICY_YAML
) -> dict[str, Any]:
    """The node's parameters: ``base`` (config/sim_policy.yaml), the bundle, then ``overrides``."""
    params = load_node_params(base)
    path = bundle if bundle.is_absolute() else REPO / bundle
    params["bundle_path"] = str(path.resolve())
    params.update(overrides or {})
    return params


@dataclass
class EpisodeRecord:
    """One closed-loop episode. Times in seconds, distances in metres, velocities in rad/s (or
    m/s for the gripper). ``status_*`` are the node's counters over the episode (deltas)."""

    seed: int
    instruction: str
    task_family: str
    success: bool
    time_to_success_s: float | None
    elapsed_s: float
    wall_s: float
    initial_gripper_to_object_m: float
    final_gripper_to_object_m: float
    min_gripper_to_object_m: float
    initial_object_to_goal_m: float
    final_object_to_goal_m: float
    chunks: int
    inferences: int
    chunk_rate_hz: float
    compute_s: dict[str, float | None]
    obs_to_publish_s: dict[str, float | None]
    status_latency_p50_s: float
    status_latency_p95_s: float
    status_latency_max_s: float
    idle_time_s: float
    dropped_steps: int
    safety_rejections: int
    stale_observations: int
    boundary_velocity_jump_max: float
    status_max_boundary_velocity_jump: float
    follower_max_velocity_jump: float
    follower_idle_s: float
    follower_samples: int
    extra: dict[str, Any] = field(default_factory=dict)
    # The episode's perturbation (None: none): kind, camera, time_s (requested, episode time),
    # and from the sim's record when it was applied (None when the episode ended before):
    # episode_time_s, sim_time_s (/clock), stamp_s (ROS time, the clock of the topics' stamps).
    perturbation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict (JSON-serialisable)."""
        return asdict(self)


@dataclass
class _Received:
    at: float
    msg: Any


class Observer:
    """An rclpy node in its own context and domain that records what the sim and the policy
    publish and calls their services; spun by a background thread."""

    def __init__(
        self,
        domain_id: int,
        record_cameras: bool = False,
        record_topics: Mapping[str, type] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.statuses: deque[_Received] = deque(maxlen=2000)
        self.chunks: list[_Received] = []
        self.trajectories: list[_Received] = []
        # /wam_sim/desired_state: stamps, positions, velocities (only while recording).
        self.desired_t: list[float] = []
        self.desired_q: list[tuple[float, ...]] = []
        self.desired_v: list[tuple[float, ...]] = []
        self.joint_states_seen = 0
        self.camera_frames: dict[str, list[tuple[float, np.ndarray]]] = {
            c: [] for c in CAMERA_NAMES
        }
        self.predicted: dict[str, list[tuple[float, np.ndarray]]] = {c: [] for c in CAMERA_NAMES}
        self.perturbations: list[dict[str, Any]] = []  # the sim's records, as published
        # Extra topics (``record_topics``: topic -> message type), recorded while recording.
        self.topics: dict[str, list[_Received]] = {t: [] for t in record_topics or {}}
        self.recording = False
        self.record_cameras = record_cameras
        self._stop = threading.Event()

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("wam_eval_observer", context=self.context)
        n = self.node
        reliable = QoSProfile(depth=200)
        sensor = QoSProfile(
            depth=400,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        n.create_subscription(PolicyStatus, "/wam_policy/status", self._on_status, reliable)
        n.create_subscription(ActionChunk, "/wam_policy/action_chunk", self._on_chunk, reliable)
        n.create_subscription(JointTrajectory, "/joint_trajectory", self._on_trajectory, reliable)
        n.create_subscription(JointState, "/wam_sim/desired_state", self._on_desired, sensor)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        n.create_subscription(String, "/wam_sim/perturbation", self._on_perturbation, latched)
        for topic, msg_type in (record_topics or {}).items():
            n.create_subscription(
                msg_type, topic, functools.partial(self._on_topic, topic), reliable
            )
        if record_cameras:
            for c in CAMERA_NAMES:
                n.create_subscription(
                    Image,
                    f"/cameras/{c}/image_raw",
                    functools.partial(self._on_camera, c),
                    sensor,
                )
                n.create_subscription(
                    Image,
                    f"/wam_policy/predicted/{c}",
                    functools.partial(self._on_predicted, c),
                    reliable,
                )
        self.enable_client = n.create_client(SetBool, "/wam_policy/enable")
        self.reset_client = n.create_client(Trigger, "/wam_policy/reset")
        self.sim_reset_client = n.create_client(ResetEpisode, "/wam_sim/reset_episode")
        self.sim_result_client = n.create_client(GetEpisodeResult, "/wam_sim/episode_result")
        self.sim_params_client = n.create_client(SetParameters, "/wam_sim/set_parameters")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, name="wam_eval_spin", daemon=True)
        self._thread.start()

    # -- spinning ------------------------------------------------------------------------------
    def _spin(self) -> None:
        try:
            while self.context.ok() and not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:
            if self.context.ok() and not self._stop.is_set():
                raise

    def close(self) -> None:
        """Stops spinning and shuts the context down."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        try:
            self.executor.shutdown(timeout_sec=2.0)
        finally:
            self.node.destroy_node()
            self.context.try_shutdown()

    # -- callbacks -----------------------------------------------------------------------------
    def _on_status(self, msg: PolicyStatus) -> None:
        with self.lock:
            self.statuses.append(_Received(time.time(), msg))

    def _on_chunk(self, msg: ActionChunk) -> None:
        if self.recording:
            with self.lock:
                self.chunks.append(_Received(time.time(), msg))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if self.recording:
            with self.lock:
                self.trajectories.append(_Received(time.time(), msg))

    def _on_desired(self, msg: JointState) -> None:
        self.joint_states_seen += 1
        if self.recording:
            with self.lock:
                self.desired_t.append(stamp_seconds(msg.header.stamp))
                self.desired_q.append(tuple(msg.position))
                self.desired_v.append(tuple(msg.velocity))

    def _on_topic(self, topic: str, msg: Any) -> None:
        if self.recording:
            with self.lock:
                self.topics[topic].append(_Received(time.time(), msg))

    def _on_perturbation(self, msg: String) -> None:
        with self.lock:
            self.perturbations.append(json.loads(msg.data))

    def perturbation_record(
        self, p: Perturbation, seed: int, since: float, timeout: float
    ) -> dict[str, Any] | None:
        """The sim's record of ``p`` in the episode of ``seed`` started after ROS time ``since``
        (waits up to ``timeout``)."""

        def find() -> dict[str, Any] | None:
            with self.lock:
                for e in reversed(self.perturbations):
                    if (e["kind"], e["camera"], e["time_s"], e["seed"]) == (
                        p.kind,
                        p.camera,
                        p.time_s,
                        seed,
                    ) and e["stamp_s"] >= since:
                        return e
            return None

        return wait_for(find, timeout)

    @staticmethod
    def _image(msg: Image) -> np.ndarray:
        h, w = int(msg.height), int(msg.width)
        arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(h, int(msg.step))[:, : 3 * w]
        return arr.reshape(h, w, 3).copy()

    def _on_camera(self, cam: str, msg: Image) -> None:
        if self.recording and msg.encoding == "rgb8":
            frame = self._image(msg)
            with self.lock:
                self.camera_frames[cam].append((stamp_seconds(msg.header.stamp), frame))

    def _on_predicted(self, cam: str, msg: Image) -> None:
        if self.recording and msg.encoding == "rgb8":
            frame = self._image(msg)
            with self.lock:
                self.predicted[cam].append((stamp_seconds(msg.header.stamp), frame))

    # -- recording -----------------------------------------------------------------------------
    def start_recording(self) -> None:
        """Clears the per-episode buffers and starts recording."""
        with self.lock:
            self.chunks.clear()
            self.trajectories.clear()
            self.desired_t.clear()
            self.desired_q.clear()
            self.desired_v.clear()
            for v in self.camera_frames.values():
                v.clear()
            for v in self.predicted.values():
                v.clear()
            for r in self.topics.values():
                r.clear()
        self.recording = True

    def stop_recording(self) -> None:
        """Stops recording (the buffers keep what was recorded)."""
        self.recording = False

    def latest_status(self) -> PolicyStatus | None:
        """The newest status, or None."""
        with self.lock:
            return self.statuses[-1].msg if self.statuses else None

    def status_after(self, t: float, timeout: float) -> PolicyStatus | None:
        """The first status received after wall time ``t`` (waits up to ``timeout``)."""

        def find() -> PolicyStatus | None:
            with self.lock:
                for r in self.statuses:
                    if r.at > t:
                        return r.msg  # type: ignore[no-any-return,unused-ignore]
            return None

        return wait_for(find, timeout)

    # -- services ------------------------------------------------------------------------------
    def call(self, client: Client, request: object, timeout: float) -> Any:
        """Calls a service and waits for the answer; raises TimeoutError."""
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout:.0f} s")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise TimeoutError(f"service {client.srv_name} did not answer in {timeout:.0f} s")
        result = future.result()
        if result is None:
            raise RuntimeError(f"service {client.srv_name} failed: {future.exception()}")
        return result


def wait_for(predicate: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T | None:
    """Polls ``predicate`` until it returns something truthy or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


class ClosedLoop:
    """The sim node and the wam_policy node on one ROS domain, plus an observer.

    ``overrides`` are merged over config/sim_policy.yaml (e.g. ``boundary_mode``,
    ``debug_extra_latency_s``). ``startup_timeout_s`` is generous: on a loaded 2-core machine
    loading the bundle and the warm-up runs take a while. ``record_topics`` (topic -> message
    type) are recorded during each episode: ``recorded(topic)`` after it. ``polls`` holds the last
    episode's ``/wam_sim/episode_result`` polls (wall time after the answer, elapsed_s, success,
    ever_succeeded): the map from ROS time (the system clock) to episode time.
    """

    def __init__(
        self,
        bundle: Path,
        domain_id: int,
        overrides: Mapping[str, Any] | None = None,
        *,
        record_cameras: bool = False,
        startup_timeout_s: float = 180.0,
        service_timeout_s: float = 20.0,
        sim_params: Mapping[str, Any] | None = None,
        rust_log: str = "info",
        keep_logs: bool = False,
        params_file: Path = SIM_POLICY_YAML,
        record_topics: Mapping[str, type] | None = None,
    ) -> None:
        self.bundle = bundle
        self.record_topics = dict(record_topics or {})
        self.polls: list[tuple[float, float, bool, bool]] = []
        self.domain_id = domain_id
        self.params = policy_params(bundle, overrides, params_file)
        self.record_cameras = record_cameras
        self.startup_timeout_s = startup_timeout_s
        self.service_timeout_s = service_timeout_s
        self.sim_params = dict(sim_params or {})
        self.rust_log = rust_log
        self.keep_logs = keep_logs
        self.workdir = make_workdir()
        self.sim: ManagedProcess | None = None
        self.policy: ManagedProcess | None = None
        self.observer: Observer | None = None
        self.enabled = False
        # The perturbation the sim's parameters name now (set again only when it changes).
        self._sim_perturbation = Perturbation.parse(
            str(self.sim_params.get("perturbation", "")),
            float(self.sim_params.get("perturbation_time_s", 0.0)),
            str(self.sim_params.get("perturbation_camera", "exterior")),
        )

    # -- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> ClosedLoop:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def tails(self, lines: int = 30) -> str:
        """The tails of both processes' logs."""
        return "\n".join(p.tail(lines) for p in (self.sim, self.policy) if p is not None)

    def fail(self, what: str) -> HarnessError:
        """A HarnessError whose message ends with both log tails."""
        return HarnessError(f"{what}\n{self.tails()}")

    def check_alive(self) -> None:
        """Raises HarnessError when a process has exited."""
        for p in (self.sim, self.policy):
            if p is not None and not p.running():
                raise self.fail(f"{p.name} exited with status {p.returncode}")

    def start(self) -> None:
        """Starts both processes and waits until the graph is connected."""
        try:
            self.sim = sim_process(self.domain_id, self.workdir, self.sim_params).start()
            self.policy = policy_process(
                self.domain_id, self.workdir, self.params, rust_log=self.rust_log
            ).start()
            self.observer = Observer(self.domain_id, self.record_cameras, self.record_topics)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        obs = self.observer
        assert obs is not None
        end = time.monotonic() + self.startup_timeout_s
        steps: list[tuple[str, Callable[[], bool]]] = [
            ("the sim's desired_state", lambda: obs.joint_states_seen > 10),
            ("the node's status", lambda: obs.latest_status() is not None),
            (
                "the node's subscriptions to the sim",
                lambda: (
                    obs.node.count_subscribers("/joint_states") >= 1
                    and obs.node.count_subscribers("/cameras/wrist/image_raw") >= 1
                    and obs.node.count_subscribers("/joint_trajectory") >= 1
                ),
            ),
            (
                "the episode services",
                lambda: (
                    obs.sim_reset_client.service_is_ready()
                    and obs.sim_result_client.service_is_ready()
                    and obs.enable_client.service_is_ready()
                    and obs.reset_client.service_is_ready()
                ),
            ),
        ]
        for what, ready in steps:
            while not ready():
                self.check_alive()
                if time.monotonic() > end:
                    raise self.fail(
                        f"start-up: no {what} after {self.startup_timeout_s:.0f} s "
                        f"(ROS_DOMAIN_ID {self.domain_id})"
                    )
                time.sleep(0.05)
        status = obs.latest_status()
        if status is not None and status.state == PolicyStatus.STATE_ERROR:
            raise self.fail(f"wam_policy is in state ERROR: {status.detail}")

    def close(self) -> None:
        """Disables the node, stops both processes and removes the temporary folder."""
        if self.observer is not None and self.enabled and self.policy and self.policy.running():
            try:
                self.set_enabled(False)
            except Exception:
                pass
        if self.observer is not None:
            self.observer.close()
            self.observer = None
        for p in (self.policy, self.sim):
            if p is not None:
                p.stop()
        if not self.keep_logs:
            remove_workdir(self.workdir)

    # -- calls ---------------------------------------------------------------------------------
    def _call(self, client: Client, request: object) -> Any:
        assert self.observer is not None, "not started"
        try:
            return self.observer.call(client, request, self.service_timeout_s)
        except (TimeoutError, RuntimeError) as e:
            self.check_alive()
            raise self.fail(str(e)) from e

    def set_enabled(self, value: bool) -> None:
        """``/wam_policy/enable``."""
        assert self.observer is not None
        res = self._call(self.observer.enable_client, SetBool.Request(data=value))
        if not res.success and "already" not in res.message:
            raise self.fail(f"enable {value}: {res.message}")
        self.enabled = value

    def reset_policy(self) -> None:
        """``/wam_policy/reset``."""
        assert self.observer is not None
        res = self._call(self.observer.reset_client, Trigger.Request())
        if not res.success:
            raise self.fail(f"reset: {res.message}")

    def reset_sim(self, seed: int, instruction: str) -> str:
        """``/wam_sim/reset_episode``; returns the episode's instruction."""
        assert self.observer is not None
        res = self._call(
            self.observer.sim_reset_client,
            ResetEpisode.Request(seed=int(seed), instruction=instruction),
        )
        if not res.success:
            raise self.fail(f"reset_episode({seed}, {instruction!r}): {res.message}")
        return str(res.instruction)

    def set_perturbation(self, perturbation: Perturbation | None) -> None:
        """Makes ``perturbation`` the option of the sim's next episodes (its ``perturbation*``
        parameters; ResetEpisode has no field for it)."""
        assert self.observer is not None
        if perturbation == self._sim_perturbation:
            return
        request = SetParameters.Request(parameters=perturbation_parameters(perturbation))
        res = self._call(self.observer.sim_params_client, request)
        refused = [r.reason for r in res.results if not r.successful]
        if refused:
            raise self.fail(f"the sim refused perturbation {perturbation}: {refused}")
        self._sim_perturbation = perturbation

    def result(self) -> GetEpisodeResult.Response:
        """``/wam_sim/episode_result``."""
        assert self.observer is not None
        return self._call(self.observer.sim_result_client, GetEpisodeResult.Request())

    def recorded(self, topic: str) -> list[tuple[float, Any]]:
        """(wall time of arrival, message) of ``topic`` (one of ``record_topics``) in the last
        episode."""
        assert self.observer is not None, "not started"
        with self.observer.lock:
            return [(r.at, r.msg) for r in self.observer.topics[topic]]

    # -- episodes ------------------------------------------------------------------------------
    def run_episode(
        self,
        seed: int,
        instruction: str,
        max_seconds: float | None = None,
        *,
        perturbation: Perturbation | None = None,
        stop_on_success: bool = True,
        seconds_after_success: float | None = None,
    ) -> EpisodeRecord:
        """Runs one episode to success (unless ``stop_on_success`` is False; then, with
        ``seconds_after_success``, that many simulated seconds past it) or the family's longest
        time (``max_seconds``); ``perturbation`` happens ``perturbation.time_s`` simulated seconds
        after the episode's start (if it lasts that long). The success and its time are the sim's,
        whatever the perturbation did."""
        obs = self.observer
        assert obs is not None, "not started"
        if self.enabled:
            self.set_enabled(False)
            time.sleep(SETTLE_S)
        family = parse_instruction(instruction)[0]
        limit = MAX_SECONDS[family] if max_seconds is None else float(max_seconds)
        self.set_perturbation(perturbation)
        t_reset = time.time()
        instruction = self.reset_sim(seed, instruction)
        time.sleep(0.1)  # frames rendered before the reset are out of the node's way
        self.reset_policy()
        first = self.result()
        self.polls = [
            (time.time(), float(first.elapsed_s), bool(first.success), bool(first.ever_succeeded))
        ]
        s0 = obs.status_after(time.time(), 5.0) or obs.latest_status()
        obs.start_recording()
        t_enable = time.time()
        wall0 = time.monotonic()
        self.set_enabled(True)
        res = first
        min_dist = float(first.gripper_to_object_m)
        time_to_success: float | None = None
        wall_cap = 3.0 * limit + 30.0
        while True:
            time.sleep(POLL_S)
            self.check_alive()
            res = self.result()
            self.polls.append(
                (time.time(), float(res.elapsed_s), bool(res.success), bool(res.ever_succeeded))
            )
            min_dist = min(min_dist, float(res.gripper_to_object_m))
            if res.ever_succeeded and time_to_success is None:
                time_to_success = float(res.elapsed_s)
                if stop_on_success:
                    break
            if res.elapsed_s >= limit:
                break
            if (
                seconds_after_success is not None
                and time_to_success is not None
                and res.elapsed_s >= time_to_success + seconds_after_success
            ):
                break
            if time.monotonic() - wall0 > wall_cap:
                raise self.fail(
                    f"episode {seed}: the sim advanced only {res.elapsed_s:.1f} s in "
                    f"{wall_cap:.0f} s of wall time"
                )
        t_end = time.time()
        wall = time.monotonic() - wall0
        self.set_enabled(False)
        obs.stop_recording()
        s1 = obs.status_after(time.time(), 5.0) or obs.latest_status()
        time.sleep(SETTLE_S)
        record = self._record(
            seed,
            instruction,
            family,
            first,
            res,
            min_dist,
            time_to_success,
            s0,
            s1,
            t_enable,
            t_end,
            wall,
        )
        if perturbation is not None:
            record.perturbation = self._perturbation_record(
                perturbation, seed, t_reset, float(res.elapsed_s)
            )
        return record

    def _perturbation_record(
        self, p: Perturbation, seed: int, t_reset: float, elapsed_s: float
    ) -> dict[str, Any]:
        """What the record says about the episode's perturbation (see EpisodeRecord)."""
        assert self.observer is not None
        out: dict[str, Any] = {
            "kind": p.kind,
            "camera": p.camera,
            "time_s": p.time_s,
            "episode_time_s": None,
            "sim_time_s": None,
            "stamp_s": None,
        }
        # Due before the last poll: the sim applied it (its record may still be on the way).
        # Not due: the sim may still have applied it between the last poll and now; look briefly.
        wait = PERTURBATION_RECORD_TIMEOUT_S if p.time_s <= elapsed_s else 0.0
        # The sim stamps with the same (system) clock; a little slack for the reset's own time.
        event = self.observer.perturbation_record(p, seed, t_reset - 0.05, wait)
        if event is None and wait > 0.0:
            raise self.fail(f"episode {seed}: no /wam_sim/perturbation record of {p.describe()}")
        if event is not None:
            for k in ("episode_time_s", "sim_time_s", "stamp_s"):
                out[k] = float(event[k])
        return out

    def _record(
        self,
        seed: int,
        instruction: str,
        family: str,
        first: GetEpisodeResult.Response,
        last: GetEpisodeResult.Response,
        min_dist: float,
        time_to_success: float | None,
        s0: PolicyStatus | None,
        s1: PolicyStatus | None,
        t_enable: float,
        t_end: float,
        wall: float,
    ) -> EpisodeRecord:
        obs = self.observer
        assert obs is not None
        if s0 is None or s1 is None:
            raise self.fail("no /wam_policy/status received around the episode")
        with obs.lock:
            chunks = [c for c in obs.chunks if c.at <= t_end + 0.05]
            trajs = [r.msg for r in obs.trajectories if r.at <= t_end + 0.05]
            dt = np.asarray(obs.desired_t)
            dq = np.asarray(obs.desired_q).reshape(len(obs.desired_t), -1)
            dv = np.asarray(obs.desired_v).reshape(len(obs.desired_t), -1)
        compute = percentiles(c.msg.total_s for c in chunks)
        obs_age = percentiles(c.at - stamp_seconds(c.msg.header.stamp) for c in chunks)
        knots = [
            TrajectoryKnots.from_points(
                stamp_seconds(m.header.stamp),
                [stamp_seconds(p.time_from_start) for p in m.points],
                [list(p.positions) for p in m.points],
                [list(p.velocities) for p in m.points],
            )
            for m in trajs
            if len(m.points) > 1 and all(len(p.velocities) for p in m.points)
        ]
        jumps = boundary_velocity_jumps(knots)
        follower = follower_metrics(dt, dv, dq, t_enable, t_end)
        n_chunks = int(s1.chunks_published - s0.chunks_published)
        enabled_s = max(t_end - t_enable, 1e-9)
        return EpisodeRecord(
            seed=int(seed),
            instruction=instruction,
            task_family=family,
            success=time_to_success is not None,
            time_to_success_s=time_to_success,
            elapsed_s=float(last.elapsed_s),
            wall_s=wall,
            initial_gripper_to_object_m=float(first.gripper_to_object_m),
            final_gripper_to_object_m=float(last.gripper_to_object_m),
            min_gripper_to_object_m=min_dist,
            initial_object_to_goal_m=float(first.object_to_goal_m),
            final_object_to_goal_m=float(last.object_to_goal_m),
            chunks=n_chunks,
            inferences=int(s1.inferences - s0.inferences),
            chunk_rate_hz=n_chunks / enabled_s,
            compute_s=compute,
            obs_to_publish_s=obs_age,
            status_latency_p50_s=float(s1.latency_p50_s),
            status_latency_p95_s=float(s1.latency_p95_s),
            status_latency_max_s=float(s1.latency_max_s),
            idle_time_s=float(s1.idle_time_s - s0.idle_time_s),
            dropped_steps=int(s1.dropped_steps - s0.dropped_steps),
            safety_rejections=int(s1.safety_rejections - s0.safety_rejections),
            stale_observations=int(s1.stale_observations - s0.stale_observations),
            boundary_velocity_jump_max=max(jumps, default=0.0),
            status_max_boundary_velocity_jump=float(s1.max_boundary_velocity_jump),
            follower_max_velocity_jump=follower["max_velocity_jump"],
            follower_idle_s=follower["idle_s"],
            follower_samples=int(follower["samples"]),
            extra={
                "boundaries": len(jumps),
                "boundary_jumps": [round(j, 5) for j in jumps],
                "follower_gaps": int(follower["gaps"]),
                "compute_samples": [round(float(c.msg.total_s), 6) for c in chunks],
                "obs_to_publish_samples": [
                    round(c.at - stamp_seconds(c.msg.header.stamp), 6) for c in chunks
                ],
                "enabled_s": enabled_s,
                "t_enable": t_enable,
                "t_end": t_end,
                "model_id": str(s1.model_id),
            },
        )

    def final_status(self) -> PolicyStatus | None:
        """The newest status of the node."""
        return self.observer.latest_status() if self.observer else None
