"""ROS 2 sim node ``wam_sim``: real-time physics, cameras, joint states, a trajectory follower.

Run with ``python -m wam_sim.node [--ros-args -p seed:=3 ...]`` (parameters: config/sim.yaml).
Physics and joint states run in one thread paced by the wall clock; cameras render in another
thread from a copy of the state, so rendering does not hold up the joint states.

Perturbations (wam_sim.perturb): ResetEpisode has no field for them, so they are episode options
given as parameters, read at every ``~/reset_episode`` (and for the first episode at start-up):
``perturbation`` (a kind, "" for none), ``perturbation_time_s`` (simulated seconds after the
episode's start) and ``perturbation_camera`` (for the camera kinds). Set them with
``set_parameters`` before the reset; they apply to every later episode until changed. Applying them
at a simulated time inside the physics step (rather than on a service call at some wall time) makes
a perturbed episode reproducible. When one is applied the node logs it and publishes a JSON record
(kind, camera, requested and actual episode time, /clock time, ROS stamp) on the latched topic
``~/perturbation``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import threading
import time
from collections.abc import Sequence

import mujoco
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from wam_policy.srv import GetEpisodeResult, ResetEpisode

from .env import SceneRenderer, SimEnv, parse_instruction
from .follower import TrajectoryFollower
from .perturb import KINDS, FrameFilter, Perturbation
from .scene import CAMERA_NAMES, JOINT_NAMES, TIMESTEP
from .urdf import arm_urdf

DEFAULTS: dict[str, object] = {
    "image_width": 64,
    "image_height": 64,
    "camera_rate_hz": 15.0,
    "joint_state_rate_hz": 200.0,
    "seed": 0,
    "instruction": "",
    "publish_clock": False,
    # Perturbation of every episode from the next reset on ("" = none; see the module's doc).
    "perturbation": "",
    "perturbation_time_s": 0.0,
    "perturbation_camera": "exterior",
}
_TEXT_PARAMETERS = ("instruction", "publish_clock", "perturbation", "perturbation_camera")
# Physics never catches up more than this many seconds at once (it drops the rest).
_MAX_CATCH_UP = 0.1


class ParameterError(ValueError):
    """A parameter has a bad value."""


def _stamp(seconds: float) -> Time:
    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def _seconds(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


class SimNode(Node):
    """The simulated robot on a ROS 2 graph."""

    def __init__(self) -> None:
        super().__init__("wam_sim")
        p = self._read_parameters()
        self.image_size = (p["image_height"], p["image_width"])
        self.camera_rate = float(p["camera_rate_hz"])
        self.joint_rate = float(p["joint_state_rate_hz"])
        self.publish_clock = bool(p["publish_clock"])
        self.env = SimEnv(self.image_size)
        self.env.reset(
            int(p["seed"]),  # type: ignore[call-overload]
            str(p["instruction"]) or None,
            self._perturbation(),
        )
        self.follower = TrajectoryFollower(self.env.qpos())
        self.lock = threading.Lock()
        self._wall0 = time.monotonic()
        self._sim_offset = 0.0  # simulated seconds of earlier episodes (for /clock)
        self.ever_succeeded = False
        self._running = True
        self.joint_state_count = 0
        self.frame_count = 0
        self._last_warn = 0.0
        self._announced_episode = 0  # the last episode whose perturbation was announced

        sensor = qos_profile_sensor_data
        self.pub_joints = self.create_publisher(JointState, "/joint_states", sensor)
        self.pub_desired = self.create_publisher(JointState, "~/desired_state", sensor)
        self.pub_images = {
            c: self.create_publisher(Image, f"/cameras/{c}/image_raw", sensor) for c in CAMERA_NAMES
        }
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.pub_instruction = self.create_publisher(String, "/instruction", latched)
        # The arm's URDF, as robot_state_publisher offers it: relative name (a namespaced sim gives
        # its own), latched, published once.
        self.pub_description = self.create_publisher(String, "robot_description", latched)
        self.pub_description.publish(String(data=arm_urdf()))
        self.pub_perturbation = self.create_publisher(String, "~/perturbation", latched)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if self.publish_clock else None
        self.create_subscription(JointTrajectory, "/joint_trajectory", self._on_trajectory, 10)
        self.create_subscription(
            Float64MultiArray, "/forward_position_controller/commands", self._on_command, 10
        )
        self.create_service(ResetEpisode, "~/reset_episode", self._on_reset)
        self.create_service(GetEpisodeResult, "~/episode_result", self._on_result)
        self.create_timer(1.0, self._publish_instruction)
        self._publish_instruction()
        self._threads = [
            threading.Thread(target=self._physics_loop, name="physics", daemon=True),
            threading.Thread(target=self._camera_loop, name="cameras", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.get_logger().info(
            f"wam_sim: {self.env.instruction!r} (seed {self.env.seed}), images "
            f"{p['image_width']}x{p['image_height']} at {self.camera_rate} Hz, joint states at "
            f"{self.joint_rate} Hz"
        )

    # -- parameters ----------------------------------------------------------------------------
    def _read_parameters(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, default in DEFAULTS.items():
            try:
                out[name] = self.declare_parameter(name, default).value
            except Exception as e:  # wrong type given on the command line or in a file
                raise ParameterError(f"parameter {name}: {e}") from e
        v: dict[str, float] = {
            k: float(out[k])  # type: ignore[arg-type]
            for k in DEFAULTS
            if k not in _TEXT_PARAMETERS
        }
        checks = [
            ("image_width", 8 <= v["image_width"] <= 640, "must lie in 8..640"),
            ("image_height", 8 <= v["image_height"] <= 480, "must lie in 8..480"),
            ("camera_rate_hz", 0.0 < v["camera_rate_hz"] <= 60.0, "must lie in (0, 60]"),
            ("joint_state_rate_hz", 1 <= v["joint_state_rate_hz"] <= 1e3, "must lie in [1, 1000]"),
            ("seed", v["seed"] >= 0, "must be >= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ParameterError(f"parameter {name}: {out[name]!r} {what}")
        if out["instruction"]:
            try:
                parse_instruction(str(out["instruction"]))
            except ValueError as e:
                raise ParameterError(f"parameter instruction: {e}") from e
        for name in ("perturbation", "perturbation_time_s", "perturbation_camera"):
            why = _perturbation_parameter_error(name, out[name])
            if why:
                raise ParameterError(f"parameter {name}: {why}")
        return out

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuses bad perturbation parameters when they are set, not at the next reset."""
        for param in params:
            why = _perturbation_parameter_error(param.name, param.value)
            if why:
                return SetParametersResult(successful=False, reason=f"{param.name}: {why}")
        return SetParametersResult(successful=True)

    def _perturbation(self) -> Perturbation | None:
        """The perturbation the parameters name now (checked when they were set)."""
        return Perturbation.parse(
            str(self.get_parameter("perturbation").value),
            float(self.get_parameter("perturbation_time_s").value),
            str(self.get_parameter("perturbation_camera").value),
        )

    # -- callbacks -----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn(self, text: str) -> None:
        t = time.monotonic()
        if t - self._last_warn > 2.0:
            self._last_warn = t
            self.get_logger().warning(text)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = self._now()
        tfs = [_seconds(p.time_from_start) for p in msg.points]  # type: ignore[arg-type]
        pos = [list(p.positions) for p in msg.points]
        vel = [list(p.velocities) for p in msg.points]
        with self.lock:
            ok = self.follower.receive_trajectory(
                list(msg.joint_names), _seconds(msg.header.stamp), tfs, pos, vel, now
            )
            reason = self.follower.last_reject_reason
        if not ok:
            self._warn(f"trajectory rejected: {reason}")

    def _on_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            ok = self.follower.command_positions(list(msg.data))
            reason = self.follower.last_reject_reason
        if not ok:
            self._warn(f"position command rejected: {reason}")

    def _on_reset(
        self, req: ResetEpisode.Request, res: ResetEpisode.Response
    ) -> ResetEpisode.Response:
        try:
            if req.instruction:
                parse_instruction(req.instruction)
            if req.seed < 0:
                raise ValueError("seed must be >= 0")
        except ValueError as e:
            res.success, res.message, res.instruction = False, str(e), ""
            return res
        perturbation = self._perturbation()
        with self.lock:
            self._sim_offset += self.env.time
            self.env.reset(int(req.seed), req.instruction or None, perturbation)
            self.follower.reset(self.env.qpos())
            self._wall0 = time.monotonic()
            self.ever_succeeded = False
            instruction = self.env.instruction
        self._publish_instruction()
        res.success = True
        res.instruction = instruction
        res.message = f"episode with seed {req.seed}: {instruction}"
        if perturbation is not None:
            res.message += f"; perturbation {perturbation.describe()}"
        return res

    def _on_result(
        self, req: GetEpisodeResult.Request, res: GetEpisodeResult.Response
    ) -> GetEpisodeResult.Response:
        del req
        with self.lock:
            res.instruction = self.env.instruction
            res.task_family = self.env.task_family
            res.success = self.env.success()
            res.ever_succeeded = self.ever_succeeded or res.success
            res.elapsed_s = self.env.time
            res.gripper_to_object_m = self.env.gripper_to_object()
            res.object_to_goal_m = self.env.object_to_goal()
        return res

    def _publish_instruction(self) -> None:
        self.pub_instruction.publish(String(data=self.env.instruction))

    # -- loops ---------------------------------------------------------------------------------
    def _joint_state(self, stamp: Time, pos: np.ndarray, vel: np.ndarray) -> JointState:
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(JOINT_NAMES)
        msg.position = pos.tolist()
        msg.velocity = vel.tolist()
        return msg

    def _physics_loop(self) -> None:
        try:
            self._physics()
        except Exception as e:  # the context went away at shutdown
            if self._running and rclpy.ok():
                raise
            del e

    def _camera_loop(self) -> None:
        try:
            self._cameras()
        except Exception as e:  # the context went away at shutdown
            if self._running and rclpy.ok():
                raise
            del e

    def _physics(self) -> None:
        period = 1.0 / self.joint_rate
        deadline = time.monotonic()
        while self._running and rclpy.ok():
            with self.lock:
                now = self._now()
                due = time.monotonic() - self._wall0
                n = int((due - self.env.time) / TIMESTEP)
                if n * TIMESTEP > _MAX_CATCH_UP:
                    dropped = n * TIMESTEP - _MAX_CATCH_UP
                    self._wall0 += dropped
                    n = int(round(_MAX_CATCH_UP / TIMESTEP))
                des_pos, des_vel = self.follower.tick(now)
                self.env.set_target(des_pos)
                self.env.step_physics(n)
                if self.env.success():
                    self.ever_succeeded = True
                q, qd = self.env.qpos(), self.env.qvel()
                sim_time = self._sim_offset + self.env.time
                event = self._perturbation_event(now)
            if event is not None:
                self._announce(event)
            stamp = _stamp(now)
            self.pub_joints.publish(self._joint_state(stamp, q, qd))
            self.pub_desired.publish(self._joint_state(stamp, des_pos, des_vel))
            if self.pub_clock is not None:
                self.pub_clock.publish(Clock(clock=_stamp(sim_time)))
            self.joint_state_count += 1
            deadline += period
            wait = deadline - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.25:  # far behind (machine overloaded): give up the missed ticks
                deadline = time.monotonic()

    def _perturbation_event(self, now: float) -> dict[str, object] | None:
        """The record of the perturbation applied since the last tick, once per episode (under
        the lock, after stepping: ``now`` is the tick's ROS time, whose simulated time is the
        env's time after the step)."""
        env = self.env
        p, applied = env.perturbation, env.perturbation_applied_s
        if p is None or applied is None or self._announced_episode == env.episode:
            return None
        self._announced_episode = env.episode
        return {
            "kind": p.kind,
            "camera": p.camera,
            "time_s": p.time_s,
            "episode_time_s": applied,
            "sim_time_s": self._sim_offset + applied,
            "stamp_s": now - (env.time - applied),
            "seed": env.seed,
            "instruction": env.instruction,
        }

    def _announce(self, event: dict[str, object]) -> None:
        self.pub_perturbation.publish(String(data=json.dumps(event)))
        camera = f" ({event['camera']})" if event["camera"] else ""
        self.get_logger().info(
            f"perturbation {event['kind']}{camera} applied at episode time "
            f"{event['episode_time_s']:.3f} s (requested {event['time_s']:.3f} s)"
        )

    def _cameras(self) -> None:
        # A model of its own: perturbations change camera poses and colours in the env's model
        # at a simulated time; copying them with the state keeps each frame consistent.
        with self.lock:
            model = copy.deepcopy(self.env.model)
        renderer = SceneRenderer(model, self.image_size)
        data = mujoco.MjData(model)
        frame_filter = FrameFilter()
        period = 1.0 / self.camera_rate
        deadline = time.monotonic()
        h, w = self.image_size
        try:
            while self._running and rclpy.ok():
                with self.lock:
                    effect = self.env.copy_render_state(model, data)
                    now = self._now()
                mujoco.mj_kinematics(model, data)
                mujoco.mj_camlight(model, data)
                frames = frame_filter.apply(renderer.render(data), effect)
                stamp = _stamp(now)
                for name, img in frames.items():
                    msg = Image()
                    msg.header.stamp = stamp
                    msg.header.frame_id = name
                    msg.height, msg.width = h, w
                    msg.encoding = "rgb8"
                    msg.is_bigendian = 0
                    msg.step = 3 * w
                    msg.data = img.tobytes()
                    self.pub_images[name].publish(msg)
                self.frame_count += 1
                deadline += period
                wait = deadline - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -2 * period:
                    deadline = time.monotonic()
        finally:
            renderer.close()

    def stop(self) -> None:
        """Stops the physics and camera threads."""
        self._running = False
        for t in self._threads:
            t.join(timeout=2.0)


def _perturbation_parameter_error(name: str, value: object) -> str:
    """Why ``value`` is no good for the perturbation parameter ``name`` ("" if fine or another
    parameter)."""
    if name == "perturbation" and value not in ("", *KINDS):
        return f"{value!r} is not one of {['', *KINDS]}"
    if name == "perturbation_camera" and value not in CAMERA_NAMES:
        return f"{value!r} is not one of {CAMERA_NAMES}"
    if name == "perturbation_time_s" and not (
        isinstance(value, float) and math.isfinite(value) and value >= 0.0
    ):
        return f"{value!r} must be a finite double >= 0"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m wam_sim.node``."""
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    try:
        node = SimNode()
    except ParameterError as e:
        print(f"wam_sim: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
