"""The simulated world: scene, randomization per seed, tasks, success, rendering, perturbations."""

from __future__ import annotations

import mujoco
import numpy as np

from .perturb import (
    CAMERA_SHIFT_M,
    CAMERA_TILT_RAD,
    CUBE_MOVE_MIN_M,
    IMAGE_KINDS,
    KINDS,
    PUSH_DURATION_S,
    PUSH_FORCE_N,
    FrameFilter,
    ImageEffect,
    Perturbation,
    random_unit,
    rotation_matrix,
)
from .scene import (
    CAMERA_NAMES,
    CUBE_COLOURS,
    CUBE_HALF,
    HOME,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    TABLE_TOP,
    TIMESTEP,
    ZONE_RADIUS,
    scene_xml,
)

TASK_FAMILIES: list[str] = ["reach", "push"]
# Reach succeeds when the point between the fingertips is this close to the cube's centre (metres).
REACH_THRESHOLD = 0.05
# Push succeeds when the cube's centre lies within the zone's radius (horizontal distance, metres).
PUSH_THRESHOLD = ZONE_RADIUS
# Longest episode per task family, simulated seconds.
MAX_SECONDS: dict[str, float] = {"reach": 6.0, "push": 12.0}

# Where cubes and the zone may lie (x, y ranges on the table, arm base at the origin).
_X_RANGE = (0.37, 0.62)
_Y_RANGE = (-0.25, 0.25)
_START_NOISE = np.array([0.15, 0.12, 0.15, 0.15, 0.15, 0.12])
# Model fields that perturbations change (camera poses, cube colours): restored at every reset.
_PERTURBED_MODEL_FIELDS = ("cam_pos", "cam_quat", "cam_mode", "geom_rgba")
# cube_removed parks the cube on the floor here: out of the arm's reach (~0.9 m) and of the
# exterior camera's view.
_REMOVED_XY = (0.0, 2.5)
_FLOOR_Z = -0.75
# A perturbation due at t is applied at the end of the first step whose time is >= t - this
# (the simulated time is a sum of steps: 0.3 may come out as 0.29999999999999993).
_TIME_SLACK = 1e-9


def instructions(family: str | None = None) -> list[str]:
    """All instructions, or those of one task family."""
    out: list[str] = []
    if family in (None, "reach"):
        out += [f"touch the {c} cube" for c in CUBE_COLOURS]
    if family in (None, "push"):
        out += [f"push the {c} cube to the yellow zone" for c in CUBE_COLOURS]
    return out


def parse_instruction(instruction: str) -> tuple[str, str]:
    """Returns (task family, cube colour); raises ValueError for an unknown instruction."""
    text = " ".join(instruction.strip().lower().split())
    for colour in CUBE_COLOURS:
        if text == f"touch the {colour} cube":
            return "reach", colour
        if text == f"push the {colour} cube to the yellow zone":
            return "push", colour
    raise ValueError(f"unknown instruction {instruction!r}; known: {instructions()}")


class SceneRenderer:
    """Offscreen renderer of the scene's cameras (one per thread: EGL contexts are per thread)."""

    def __init__(self, model: mujoco.MjModel, image_size: tuple[int, int]) -> None:
        self.height, self.width = image_size
        self._renderer = mujoco.Renderer(model, self.height, self.width)

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Camera name -> uint8 (H, W, 3) RGB of the state in ``data`` (kinematics computed)."""
        out: dict[str, np.ndarray] = {}
        for name in CAMERA_NAMES:
            self._renderer.update_scene(data, camera=name)
            out[name] = np.ascontiguousarray(self._renderer.render(), dtype=np.uint8).copy()
        return out

    def close(self) -> None:
        self._renderer.close()


class SimEnv:
    """The arm, the table, three cubes and a zone; tasks given as language instructions."""

    def __init__(self, image_size: tuple[int, int] = (64, 64)) -> None:
        h, w = int(image_size[0]), int(image_size[1])
        if not (8 <= h <= 480 and 8 <= w <= 640):
            raise ValueError(f"image_size {image_size} outside 8x8 .. 480x640")
        self.image_size = (h, w)
        self.model = mujoco.MjModel.from_xml_string(scene_xml())
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES[:6]])
        self._arm_dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES[:6]])
        self._finger_qadr = np.array(
            [m.jnt_qposadr[m.joint(n).id] for n in ("finger_left", "finger_right")]
        )
        self._finger_dadr = np.array(
            [m.jnt_dofadr[m.joint(n).id] for n in ("finger_left", "finger_right")]
        )
        self._cube_qadr = {c: m.jnt_qposadr[m.joint(f"cube_{c}_free").id] for c in CUBE_COLOURS}
        self._cube_dadr = {c: m.jnt_dofadr[m.joint(f"cube_{c}_free").id] for c in CUBE_COLOURS}
        self._tip = m.site("tip").id
        self._zone_mocap = m.body_mocapid[m.body("zone").id]
        self._lower = np.array(JOINT_LOWER)
        self._upper = np.array(JOINT_UPPER)
        self._hand = m.body("hand").id
        self._model_defaults = {f: getattr(m, f).copy() for f in _PERTURBED_MODEL_FIELDS}
        self._renderer: SceneRenderer | None = None
        self._frames = FrameFilter()
        self.instruction = ""
        self.task_family = ""
        self.colour = ""
        self.seed = 0
        # Episodes started so far (a frozen camera forgets its image at the next one).
        self.episode = 0
        self.perturbation: Perturbation | None = None
        # Simulated time (since the episode's start) at which the perturbation was applied.
        self.perturbation_applied_s: float | None = None
        self._pending: list[tuple[float, str]] = []  # (episode time, action), by time
        self._held: np.ndarray | None = None  # arm_blocked: the setpoints the brakes hold
        self.reset(0)

    # -- episode -------------------------------------------------------------------------------
    def reset(
        self, seed: int, instruction: str | None = None, perturbation: Perturbation | None = None
    ) -> str:
        """Starts an episode; returns its instruction (drawn from the seed when None or empty).

        ``perturbation`` is applied when the simulated time reaches its ``time_s`` (at once for 0);
        whatever an earlier episode's perturbation changed is undone first.
        """
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A11])
        if instruction:
            family, colour = parse_instruction(instruction)
        else:
            family = TASK_FAMILIES[int(rng.integers(len(TASK_FAMILIES)))]
            colour = CUBE_COLOURS[int(rng.integers(len(CUBE_COLOURS)))]
            rng.random()  # keep the draws below independent of whether an instruction was given
        self.task_family, self.colour, self.seed = family, colour, int(seed)
        self.instruction = (
            f"touch the {colour} cube"
            if family == "reach"
            else f"push the {colour} cube to the yellow zone"
        )
        cubes, zone = self._layout(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC0BE]))
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for f, value in self._model_defaults.items():
            getattr(m, f)[:] = value
        self.episode += 1
        self.perturbation, self.perturbation_applied_s = perturbation, None
        self._held = None
        self._pending = []
        if perturbation is not None:
            self._pending.append((perturbation.time_s, "apply"))
            if perturbation.kind == "arm_pushed":
                self._pending.append((perturbation.time_s + PUSH_DURATION_S, "release"))
        q0 = np.array(HOME)
        q0[:6] += rng.uniform(-1.0, 1.0, 6) * _START_NOISE
        q0 = np.clip(q0, self._lower + 0.05, self._upper - 0.05)
        q0[6] = HOME[6]
        d.qpos[self._arm_qadr] = q0[:6]
        d.qpos[self._finger_qadr] = q0[6] / 2
        for c, (x, y, yaw) in cubes.items():
            a = self._cube_qadr[c]
            d.qpos[a : a + 3] = (x, y, TABLE_TOP + CUBE_HALF)
            d.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        d.mocap_pos[self._zone_mocap] = (zone[0], zone[1], TABLE_TOP + 0.0005)
        self.set_target(q0)
        mujoco.mj_forward(m, d)
        self._run_due()
        return self.instruction

    def _layout(
        self, rng: np.random.Generator
    ) -> tuple[dict[str, tuple[float, float, float]], np.ndarray]:
        """Non-overlapping cube positions and a zone; for push, a clear path behind the cube."""
        for _ in range(10000):
            lo, hi = (_X_RANGE[0], _Y_RANGE[0]), (_X_RANGE[1], _Y_RANGE[1])
            xy = {c: rng.uniform(lo, hi) for c in CUBE_COLOURS}
            pts = list(xy.values())
            if min(np.linalg.norm(a - b) for i, a in enumerate(pts) for b in pts[i + 1 :]) < 0.1:
                continue
            target = xy[self.colour]
            if self.task_family == "push":
                ang = rng.uniform(-np.pi, np.pi)
                dist = rng.uniform(0.12, 0.2)
                zone = target + dist * np.array([np.cos(ang), np.sin(ang)])
                if not (_X_RANGE[0] <= zone[0] <= _X_RANGE[1] + 0.03):
                    continue
                if not (_Y_RANGE[0] - 0.03 <= zone[1] <= _Y_RANGE[1] + 0.03):
                    continue
                u = (zone - target) / np.linalg.norm(zone - target)
                start = target - 0.1 * u
                if not (0.3 <= start[0] <= 0.68 and abs(start[1]) <= 0.32):
                    continue
                if any(
                    _segment_distance(xy[c], start, zone) < 0.085
                    for c in CUBE_COLOURS
                    if c != self.colour
                ):
                    continue
            else:
                zone = rng.uniform(lo, hi)
                if min(np.linalg.norm(zone - p) for p in pts) < 0.09:
                    continue
            yaws = rng.uniform(-0.5, 0.5, len(CUBE_COLOURS))
            cubes = {
                c: (float(xy[c][0]), float(xy[c][1]), float(y))
                for c, y in zip(CUBE_COLOURS, yaws, strict=True)
            }
            return cubes, zone
        raise RuntimeError("no layout found")  # pragma: no cover

    # -- state ---------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return float(self.data.time)

    def qpos(self) -> np.ndarray:
        """Measured positions in JOINT_NAMES order (gripper = finger opening in metres)."""
        q = np.empty(7)
        q[:6] = self.data.qpos[self._arm_qadr]
        q[6] = self.data.qpos[self._finger_qadr].sum()
        return q

    def qvel(self) -> np.ndarray:
        """Measured velocities in JOINT_NAMES order."""
        v = np.empty(7)
        v[:6] = self.data.qvel[self._arm_dadr]
        v[6] = self.data.qvel[self._finger_dadr].sum()
        return v

    def tip_position(self) -> np.ndarray:
        """The point between the fingertips, world frame."""
        return self.data.site_xpos[self._tip].copy()

    def cube_position(self, colour: str | None = None) -> np.ndarray:
        """Centre of a cube (the instructed one by default), world frame."""
        a = self._cube_qadr[colour or self.colour]
        return self.data.qpos[a : a + 3].copy()

    def zone_position(self) -> np.ndarray:
        """Centre of the target zone on the table."""
        return self.data.mocap_pos[self._zone_mocap].copy()

    # -- control -------------------------------------------------------------------------------
    def set_target(self, q: np.ndarray) -> None:
        """Position setpoints (JOINT_NAMES order), clipped into the joint limits; ignored while
        the arm is blocked (the brakes hold it, as a jammed or e-stopped arm ignores commands)."""
        q = np.asarray(q, dtype=np.float64).reshape(7)
        if not np.all(np.isfinite(q)):
            raise ValueError("non-finite joint target")
        if self._held is not None:
            return
        self.data.ctrl[:7] = np.clip(q, self._lower, self._upper)

    def target(self) -> np.ndarray:
        """The current setpoints."""
        return self.data.ctrl[:7].copy()

    def step(self, seconds: float) -> None:
        """Advances the physics by round(seconds / timestep) steps."""
        self.step_physics(round(seconds / TIMESTEP))

    def step_physics(self, n: int) -> None:
        """Advances the physics by n steps; a perturbation due in between is applied at its step,
        so that where it happens does not depend on how the caller chunks its steps."""
        n = int(n)
        while n > 0:
            k = n
            if self._pending:
                due = self._pending[0][0] - self.time - _TIME_SLACK
                k = min(n, max(0, int(np.ceil(due / TIMESTEP))))  # 0: _run_due runs it now
            if k > 0:
                mujoco.mj_step(self.model, self.data, nstep=k)
                n -= k
            self._run_due()

    # -- perturbations -------------------------------------------------------------------------
    def _run_due(self) -> None:
        """Runs the pending perturbation actions whose time has come (at the end of the first step
        that reaches it: the physics only changes at steps)."""
        while self._pending and self._pending[0][0] <= self.time + _TIME_SLACK:
            _, action = self._pending.pop(0)
            p = self.perturbation
            assert p is not None
            if action == "release":
                self.data.xfrc_applied[self._hand] = 0.0
                continue
            # Draws (a spot, a direction) depend on the episode's seed and the kind only, not on
            # the time or on earlier draws: a perturbed episode is reproducible.
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x9E27, KINDS.index(p.kind)])
            if p.kind == "cube_moved":
                self._move_cube(rng)
            elif p.kind == "cube_removed":
                self._remove_cube()
            elif p.kind == "arm_blocked":
                self._block_arm()
            elif p.kind == "arm_pushed":
                self._push_arm(rng)
            elif p.kind == "camera_shifted":
                self._shift_camera(p.camera, rng)
            # The image kinds change no state: image_effect() reports them from now on.
            self.perturbation_applied_s = self.time

    def _move_cube(self, rng: np.random.Generator) -> None:
        """Teleports the instructed cube to a free spot of the cubes' area: at least
        CUBE_MOVE_MIN_M from where it was, as far from the other cubes as the layout keeps them,
        clear of the fingertips, not already in the zone (which would solve a push), touching
        nothing but the table. Only yaw is kept and the cube is at rest."""
        m, d = self.model, self.data
        a, v = self._cube_qadr[self.colour], self._cube_dadr[self.colour]
        old = d.qpos[a : a + 3].copy()
        w, _, _, z = d.qpos[a + 3 : a + 7]
        yaw = 2.0 * np.arctan2(z, w)  # the cube's heading (it lies flat on the table)
        others = [self.cube_position(c)[:2] for c in CUBE_COLOURS if c != self.colour]
        tip = self.tip_position()[:2]
        zone = self.zone_position()[:2]
        lo, hi = (_X_RANGE[0], _Y_RANGE[0]), (_X_RANGE[1], _Y_RANGE[1])
        best, best_margin = old[:2], -np.inf
        for _ in range(2000):
            xy = rng.uniform(lo, hi)
            margins = [
                np.linalg.norm(xy - old[:2]) - CUBE_MOVE_MIN_M,
                min(np.linalg.norm(xy - o) for o in others) - 0.1,
                np.linalg.norm(xy - tip) - 0.1,
            ]
            if self.task_family == "push":
                margins.append(np.linalg.norm(xy - zone) - (ZONE_RADIUS + 0.05))
            margin = float(min(margins))
            if margin < 0.0 and margin <= best_margin:
                continue
            d.qpos[a : a + 3] = (xy[0], xy[1], TABLE_TOP + CUBE_HALF)
            d.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            mujoco.mj_forward(m, d)
            if self._cube_touches_only_the_table():
                best, best_margin = xy, margin
                if margin >= 0.0:
                    break
        d.qpos[a : a + 3] = (best[0], best[1], TABLE_TOP + CUBE_HALF)
        d.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        d.qvel[v : v + 6] = 0.0
        mujoco.mj_forward(m, d)

    def _cube_touches_only_the_table(self) -> bool:
        """After mj_forward: the instructed cube is in contact with nothing but the table (a
        teleport into the arm or another cube would make the solver fling it away)."""
        geom = self.model.geom(f"cube_{self.colour}").id
        table = self.model.geom("table").id
        for c in self.data.contact[: self.data.ncon]:
            if geom in (c.geom1, c.geom2) and table not in (c.geom1, c.geom2):
                return False
        return True

    def _remove_cube(self) -> None:
        """Parks the instructed cube at rest on the floor far away (nothing can reach it) and
        makes it transparent (no camera can see it, wherever the wrist looks)."""
        m, d = self.model, self.data
        a, v = self._cube_qadr[self.colour], self._cube_dadr[self.colour]
        d.qpos[a : a + 3] = (_REMOVED_XY[0], _REMOVED_XY[1], _FLOOR_Z + CUBE_HALF)
        d.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)
        d.qvel[v : v + 6] = 0.0
        m.geom_rgba[m.geom(f"cube_{self.colour}").id, 3] = 0.0
        mujoco.mj_forward(m, d)

    def _block_arm(self) -> None:
        """Brakes every joint where it is: the velocities stop at once and the setpoints hold the
        measured pose from now on (set_target is ignored), so the arm stays still whatever is
        commanded; contacts can only nudge it against the stiff servos."""
        d = self.data
        d.qvel[self._arm_dadr] = 0.0
        d.qvel[self._finger_dadr] = 0.0
        q = self.qpos()
        d.ctrl[:7] = np.clip(q, self._lower, self._upper)
        self._held = d.ctrl[:7].copy()

    def _push_arm(self, rng: np.random.Generator) -> None:
        """PUSH_FORCE_N on the hand for PUSH_DURATION_S (released by the pending "release"),
        horizontal and across the arm (it swings the arm about its base), to either side."""
        tip = self.tip_position()[:2]
        radial = tip / max(float(np.linalg.norm(tip)), 1e-6)
        side = 1.0 if rng.random() < 0.5 else -1.0
        force = PUSH_FORCE_N * side * np.array([-radial[1], radial[0], 0.0])
        self.data.xfrc_applied[self._hand] = 0.0
        self.data.xfrc_applied[self._hand, :3] = force

    def _shift_camera(self, camera: str, rng: np.random.Generator) -> None:
        """Moves the camera CAMERA_SHIFT_M and turns it CAMERA_TILT_RAD, each in a random
        direction, relative to its mount. A camera that tracked a body becomes fixed to its
        mount at its current orientation first (a bumped mount does not keep aiming)."""
        m, d = self.model, self.data
        cid = m.camera(camera).id
        parent = m.cam_bodyid[cid]
        # The poses in ``data`` are those the renderer uses: only the cameras are recomputed
        # (mj_camlight), so that nothing else in a rendered frame changes.
        r_parent = d.xmat[parent].reshape(3, 3)
        r_cam = r_parent.T @ d.cam_xmat[cid].reshape(3, 3)  # in the mount's frame
        pos = r_parent.T @ (d.cam_xpos[cid] - d.xpos[parent])
        tilt = rotation_matrix(random_unit(rng), CAMERA_TILT_RAD)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, (r_cam @ tilt).reshape(9))
        m.cam_mode[cid] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
        m.cam_pos[cid] = pos + CAMERA_SHIFT_M * random_unit(rng)
        m.cam_quat[cid] = quat
        mujoco.mj_camlight(m, d)

    def image_effect(self) -> ImageEffect:
        """The image perturbation the frames of the current state must show (if any)."""
        p = self.perturbation
        if p is not None and p.kind in IMAGE_KINDS and self.perturbation_applied_s is not None:
            return ImageEffect(self.episode, p.kind, p.camera)
        return ImageEffect(self.episode)

    def copy_render_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> ImageEffect:
        """Copies what the cameras see (poses, the model fields perturbations change) into a
        renderer's own ``model``/``data`` (a copy of this model), so that another thread can
        render without holding up the physics; returns the frames' image effect."""
        data.qpos[:] = self.data.qpos
        data.mocap_pos[:] = self.data.mocap_pos
        data.mocap_quat[:] = self.data.mocap_quat
        data.time = self.data.time
        for f in _PERTURBED_MODEL_FIELDS:
            getattr(model, f)[:] = getattr(self.model, f)
        return self.image_effect()

    # -- task ----------------------------------------------------------------------------------
    def gripper_to_object(self) -> float:
        """Distance from the point between the fingertips to the instructed cube's centre."""
        return float(np.linalg.norm(self.tip_position() - self.cube_position()))

    def object_to_goal(self) -> float:
        """Horizontal distance from the cube's centre to the zone's centre (0.0 for reach)."""
        if self.task_family != "push":
            return 0.0
        return float(np.linalg.norm(self.cube_position()[:2] - self.zone_position()[:2]))

    def success(self) -> bool:
        """The task is solved in the current state."""
        if self.task_family == "reach":
            return self.gripper_to_object() < REACH_THRESHOLD
        on_table = self.cube_position()[2] < TABLE_TOP + 2.5 * CUBE_HALF
        return bool(on_table and self.object_to_goal() < PUSH_THRESHOLD)

    # -- rendering -----------------------------------------------------------------------------
    def render(self) -> dict[str, np.ndarray]:
        """Camera name -> uint8 (H, W, 3) RGB (with the active image perturbation, if any)."""
        if self._renderer is None:
            self._renderer = SceneRenderer(self.model, self.image_size)
        return self._frames.apply(self._renderer.render(self.data), self.image_effect())

    def close(self) -> None:
        """Frees the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))
