"""Scripted expert: waypoints in Cartesian space, damped-least-squares IK on MuJoCo's Jacobian."""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from .env import MAX_SECONDS, SimEnv
from .scene import CAMERA_NAMES, CUBE_HALF, HOME, JOINT_LOWER, JOINT_UPPER, TABLE_TOP, TIMESTEP

CONTROL_DT = 0.1
# Largest change of a commanded arm joint per control period (rad): 0.8 rad/s at most.
MAX_JOINT_STEP = 0.08
# Largest motion of the commanded fingertip point per control period (m).
MAX_TIP_STEP = 0.025
PUSH_TIP_STEP = 0.012
_DOWN = np.array([0.0, 0.0, -1.0])
_PUSH_Z = TABLE_TOP + 0.022
_PUSHER = 0.014  # half-width of the closed fingers seen along the push direction


class Expert:
    """Scripted solver of the current episode's task (create it after ``env.reset``).

    ``reach_colour`` makes it a solver of "touch the <colour> cube" instead, whatever the episode's
    task: the detour of `expert_episode`. It starts from the current setpoint and fingertip, so it can
    take over in the middle of an episode.
    """

    def __init__(self, env: SimEnv, reach_colour: str | None = None) -> None:
        self.family = env.task_family if reach_colour is None else "reach"
        self.colour = env.colour if reach_colour is None else reach_colour
        self._model = env.model
        self._ik = mujoco.MjData(env.model)
        self._qadr = env._arm_qadr
        self._dadr = env._arm_dadr
        self._tip = env._tip
        self._lower = np.array(JOINT_LOWER[:6]) + 0.02
        self._upper = np.array(JOINT_UPPER[:6]) - 0.02
        self.q_cmd = env.target()[:6].copy()
        self.tip_cmd = env.tip_position()
        self.phase = "approach"
        self.done = False
        self._gripper = 0.04 if self.family == "reach" else 0.0

    # -- public --------------------------------------------------------------------------------
    def target(self, env: SimEnv) -> np.ndarray:
        """Joint setpoint (7,) to command for the next control period."""
        goal, step = self._waypoint(env)
        delta = goal - self.tip_cmd
        dist = float(np.linalg.norm(delta))
        if dist > step:
            delta *= step / dist
        self.tip_cmd = self.tip_cmd + delta
        q = self._solve(self.tip_cmd, self.q_cmd)
        self.q_cmd = self.q_cmd + np.clip(q - self.q_cmd, -MAX_JOINT_STEP, MAX_JOINT_STEP)
        return np.concatenate([self.q_cmd, [self._gripper]])

    # -- planner -------------------------------------------------------------------------------
    def _waypoint(self, env: SimEnv) -> tuple[np.ndarray, float]:
        tip = env.tip_position()
        cube = env.cube_position(self.colour)
        if self.family == "reach":
            above = cube + (0.0, 0.0, 0.12)
            touch = cube + (0.0, 0.0, CUBE_HALF + 0.012)
            if self.phase == "approach":
                if np.linalg.norm(tip - above) < 0.03:
                    self.phase = "descend"
                return above, MAX_TIP_STEP
            if np.linalg.norm(tip - touch) < 0.01:
                self.done = True
            return touch, 0.015
        zone = env.zone_position()
        u = zone[:2] - cube[:2]
        u_norm = float(np.linalg.norm(u))
        u = u / max(u_norm, 1e-6)
        behind = np.array([*(cube[:2] - u * (CUBE_HALF + _PUSHER + 0.035)), _PUSH_Z])
        if self.phase == "approach":
            wp = behind + (0.0, 0.0, 0.12)
            if np.linalg.norm(tip - wp) < 0.03:
                self.phase = "lower"
                self._line = u
            return wp, MAX_TIP_STEP
        if self.phase == "lower":
            if np.linalg.norm(tip - behind) < 0.012:
                self.phase = "push"
            return behind, 0.015
        if self.phase == "push":
            if u_norm < 0.02:
                self.phase = "stop"
            else:
                # Contact point behind the cube on the line to the zone, and a lead into the cube.
                contact = cube[:2] - u * (CUBE_HALF + _PUSHER)
                lateral = (tip[:2] - contact) - np.dot(tip[:2] - contact, u) * u
                if np.linalg.norm(lateral) > 0.03 or np.dot(tip[:2] - cube[:2], u) > 0.0:
                    self.phase = "approach"  # lost the cube: go around again
                    return self.tip_cmd + (0.0, 0.0, 0.05), MAX_TIP_STEP
                lead = min(0.03, u_norm)
                wp = np.array([*(contact + u * lead), _PUSH_Z])
                return wp, PUSH_TIP_STEP
        self.done = True
        return self.tip_cmd.copy(), 0.0

    # -- inverse kinematics --------------------------------------------------------------------
    def _solve(self, goal: np.ndarray, q0: np.ndarray, iters: int = 8) -> np.ndarray:
        model, d = self._model, self._ik
        q = q0.copy()
        jacp = np.zeros((3, model.nv))
        jacr = np.zeros((3, model.nv))
        rest = np.array(HOME[:6])
        for _ in range(iters):
            d.qpos[self._qadr] = q
            mujoco.mj_kinematics(model, d)
            mujoco.mj_comPos(model, d)
            pos = d.site_xpos[self._tip]
            z = d.site_xmat[self._tip].reshape(3, 3)[:, 2]
            e = np.concatenate([goal - pos, np.cross(z, _DOWN)[:2]])
            if np.linalg.norm(e) < 1e-4:
                break
            mujoco.mj_jacSite(model, d, jacp, jacr, self._tip)
            jac = np.vstack([jacp[:, self._dadr], jacr[:2, self._dadr]])
            lam2 = 1e-3
            jjt = jac @ jac.T + lam2 * np.eye(5)
            dq = jac.T @ np.linalg.solve(jjt, e)
            # Null-space pull towards the rest posture (one redundant degree of freedom).
            pinv = jac.T @ np.linalg.inv(jjt)
            dq += (np.eye(6) - pinv @ jac) @ (0.1 * (rest - q))
            q = np.clip(q + np.clip(dq, -0.3, 0.3), self._lower, self._upper)
        return q


@dataclass
class Episode:
    """One expert episode: frames at the camera rate and setpoints at the control rate."""

    instruction: str
    task_family: str
    seed: int
    success: bool
    frame_times: np.ndarray
    frames: dict[str, np.ndarray]
    qpos_at_frames: np.ndarray
    target_times: np.ndarray
    targets: np.ndarray
    qpos_at_targets: np.ndarray
    info: dict[str, float] = field(default_factory=dict)
    # When the instructed task's expert took over (after a detour; 0 without one). Setpoints before it
    # do not solve the instruction and are no labels for it.
    label_from_s: float = 0.0


def expert_episode(
    env: SimEnv,
    seed: int,
    instruction: str | None = None,
    camera_rate_hz: float = 15.0,
    control_dt: float = CONTROL_DT,
    max_seconds: float | None = None,
    settle_s: float = 0.5,
    detour: tuple[str, float] | None = None,
) -> Episode:
    """Runs the expert on a fresh episode; camera_rate_hz <= 0 renders no frames.

    The episode ends once the task is solved and the expert is done for ``settle_s``, or at
    ``max_seconds`` (default per task family: reach 6 s, push 12 s, plus the detour).
    ``detour=(colour, seconds)`` first heads for the cube of that colour for that long, then solves the
    instructed task from wherever the arm is: states from which only the instruction tells where to go
    (training data against a policy that extrapolates the motion it sees instead).
    """
    instruction = env.reset(seed, instruction)
    detour_s = 0.0 if detour is None else max(0.0, float(detour[1]))
    expert = Expert(env) if detour is None else Expert(env, reach_colour=detour[0])
    on_task = detour is None
    limit = MAX_SECONDS[env.task_family] if max_seconds is None else float(max_seconds)
    limit += detour_s
    label_from_s = 0.0
    ctrl_steps = max(1, int(round(control_dt / TIMESTEP)))
    total = int(round(limit / TIMESTEP))
    frame_steps: list[int] = []
    if camera_rate_hz > 0:
        k = 0
        while True:
            s = int(round(k / camera_rate_hz / TIMESTEP))
            if s > total:
                break
            frame_steps.append(s)
            k += 1
    frames: dict[str, list[np.ndarray]] = {c: [] for c in CAMERA_NAMES}
    f_times: list[float] = []
    q_frames: list[np.ndarray] = []
    t_times: list[float] = []
    targets: list[np.ndarray] = []
    q_targets: list[np.ndarray] = []
    step = 0
    fi = 0
    solved_since: int | None = None
    end = total
    while step <= end:
        if not on_task and env.time >= detour_s - 1e-9:
            expert, on_task, label_from_s = Expert(env), True, env.time
        if step % ctrl_steps == 0 and step < end:
            t_times.append(env.time)
            q_targets.append(env.qpos())
            q = expert.target(env)
            targets.append(q)
            env.set_target(q)
        if fi < len(frame_steps) and frame_steps[fi] == step:
            mujoco.mj_forward(env.model, env.data)
            f_times.append(env.time)
            q_frames.append(env.qpos())
            for c, img in env.render().items():
                frames[c].append(img)
            fi += 1
        if step % ctrl_steps == 0:
            if on_task and env.success() and expert.done:
                solved_since = step if solved_since is None else solved_since
                if (step - solved_since) * TIMESTEP >= settle_s - 1e-9 and end == total:
                    end = step
            else:
                solved_since = None
        if step == end:
            break
        nxt = (step // ctrl_steps + 1) * ctrl_steps
        if fi < len(frame_steps):
            nxt = min(nxt, frame_steps[fi])
        nxt = min(nxt, end)
        env.step_physics(nxt - step)
        step = nxt
    h, w = env.image_size
    return Episode(
        instruction=instruction,
        task_family=env.task_family,
        seed=int(seed),
        success=bool(env.success()),
        frame_times=np.array(f_times, dtype=np.float64),
        frames={
            c: (np.stack(v) if v else np.zeros((0, h, w, 3), np.uint8)) for c, v in frames.items()
        },
        qpos_at_frames=np.array(q_frames, dtype=np.float64).reshape(-1, 7),
        target_times=np.array(t_times, dtype=np.float64),
        targets=np.array(targets, dtype=np.float64).reshape(-1, 7),
        qpos_at_targets=np.array(q_targets, dtype=np.float64).reshape(-1, 7),
        info={"gripper_to_object": env.gripper_to_object(), "object_to_goal": env.object_to_goal()},
        label_from_s=label_from_s,
    )
