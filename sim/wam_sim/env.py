"""The simulated world: scene, randomization per seed, tasks, success, rendering."""

from __future__ import annotations

import mujoco
import numpy as np

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
        self._renderer: SceneRenderer | None = None
        self.instruction = ""
        self.task_family = ""
        self.colour = ""
        self.seed = 0
        self.reset(0)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int, instruction: str | None = None) -> str:
        """Starts an episode; returns its instruction (drawn from the seed when None or empty)."""
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
        """Position setpoints (JOINT_NAMES order), clipped into the joint limits."""
        q = np.asarray(q, dtype=np.float64).reshape(7)
        if not np.all(np.isfinite(q)):
            raise ValueError("non-finite joint target")
        self.data.ctrl[:7] = np.clip(q, self._lower, self._upper)

    def target(self) -> np.ndarray:
        """The current setpoints."""
        return self.data.ctrl[:7].copy()

    def step(self, seconds: float) -> None:
        """Advances the physics by round(seconds / timestep) steps."""
        n = int(round(seconds / TIMESTEP))
        if n > 0:
            mujoco.mj_step(self.model, self.data, nstep=n)

    def step_physics(self, n: int) -> None:
        """Advances the physics by n steps."""
        if n > 0:
            mujoco.mj_step(self.model, self.data, nstep=int(n))

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
        """Camera name -> uint8 (H, W, 3) RGB."""
        if self._renderer is None:
            self._renderer = SceneRenderer(self.model, self.image_size)
        return self._renderer.render(self.data)

    def close(self) -> None:
        """Frees the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))
