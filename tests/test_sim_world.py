"""The MuJoCo world: scene, cameras, colours, determinism, success predicates, perturbations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import pytest

from wam_sim import (
    CAMERA_NAMES,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    PUSH_THRESHOLD,
    REACH_THRESHOLD,
    TASK_FAMILIES,
    SimEnv,
    instructions,
)
from wam_sim.perturb import (
    CAMERA_SHIFT_M,
    CAMERA_TILT_RAD,
    CUBE_MOVE_MIN_M,
    KINDS,
    Perturbation,
    occlusion_box,
)
from wam_sim.scene import CUBE_COLOURS, JOINT_MAX_VELOCITY, TIMESTEP
from wam_sim.urdf import arm_urdf
from wam_sim.urdf import fixture as fk_fixture

POLICY_LOWER = [-2.9, -1.8, -2.9, -3.0, -2.9, -0.1, 0.0]
POLICY_UPPER = [2.9, 1.8, 2.9, 0.0, 2.9, 3.7, 0.04]


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(image_size=(64, 64))


def test_scene(env: SimEnv) -> None:
    m = env.model
    assert m.opt.timestep == TIMESTEP == 0.002
    for name in JOINT_NAMES[:6]:
        assert m.joint(name).type == mujoco.mjtJoint.mjJNT_HINGE
    assert [m.actuator(i).name for i in range(m.nu)] == JOINT_NAMES
    assert all(m.camera(c) is not None for c in CAMERA_NAMES)
    assert np.all(np.array(JOINT_LOWER) >= POLICY_LOWER)
    assert np.all(np.array(JOINT_UPPER) <= POLICY_UPPER)
    assert TASK_FAMILIES == ["reach", "push"]
    assert instructions() == [
        "touch the red cube",
        "touch the green cube",
        "touch the blue cube",
        "push the red cube to the yellow zone",
        "push the green cube to the yellow zone",
        "push the blue cube to the yellow zone",
    ]


def test_render(env: SimEnv) -> None:
    env.reset(1, "touch the red cube")
    frames = env.render()
    assert set(frames) == set(CAMERA_NAMES)
    for img in frames.values():
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3) and img.flags["C_CONTIGUOUS"]
        assert img.std() > 10.0  # not blank
    assert np.abs(frames["exterior"].astype(int) - frames["wrist"].astype(int)).mean() > 10.0
    other = SimEnv(image_size=(48, 80))
    other.reset(1)
    assert other.render()["wrist"].shape == (48, 80, 3)
    other.close()


def _colour_pixels(img: np.ndarray) -> dict[str, int]:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return {
        "red": int(((r > 120) & (g < 70) & (b < 70)).sum()),
        "green": int(((g > 90) & (r < 80) & (b < 80)).sum()),
        "blue": int(((b > 110) & (r < 80) & (g < 100)).sum()),
        "yellow": int(((r > 150) & (g > 130) & (b < 80)).sum()),
    }


def test_colours_distinct(env: SimEnv) -> None:
    for seed in range(3):
        env.reset(seed, "push the red cube to the yellow zone")
        counts = _colour_pixels(env.render()["exterior"])
        assert all(n >= 3 for n in counts.values()), (seed, counts)


def test_moving_the_arm_changes_the_wrist_view(env: SimEnv) -> None:
    env.reset(2)
    before = env.render()
    q = env.qpos()
    q[0] += 0.4
    env.set_target(q)
    env.step(1.0)
    after = env.render()
    assert np.abs(after["wrist"].astype(int) - before["wrist"].astype(int)).mean() > 3.0
    assert np.abs(env.qpos()[0] - q[0]) < 0.02  # the actuators track the target


def test_determinism(env: SimEnv) -> None:
    def run(seed: int) -> tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        inst = env.reset(seed)
        env.set_target(env.qpos() + 0.05)
        env.step(0.3)
        return inst, env.qpos(), env.data.qpos.copy(), env.render()

    a, b, c = run(11), run(11), run(12)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    for cam in CAMERA_NAMES:
        np.testing.assert_array_equal(a[3][cam], b[3][cam])
    assert not np.array_equal(a[2], c[2])


def test_randomization(env: SimEnv) -> None:
    starts, drawn = [], set()
    for seed in range(20):
        drawn.add(env.reset(seed))
        starts.append(env.qpos())
        assert env.time == 0.0
        cubes = [env.cube_position(c) for c in CUBE_COLOURS]
        for i, p in enumerate(cubes):
            for q in cubes[i + 1 :]:
                assert np.linalg.norm(p[:2] - q[:2]) >= 0.1
    assert drawn == set(instructions())
    assert np.ptp(np.array(starts)[:, :6], axis=0).min() > 0.05
    # A given instruction keeps the seed's layout and start pose.
    env.reset(4, "touch the blue cube")
    q_blue, cube = env.qpos(), env.cube_position("red")
    env.reset(4, "touch the green cube")
    np.testing.assert_array_equal(q_blue, env.qpos())
    np.testing.assert_array_equal(cube, env.cube_position("red"))
    with pytest.raises(ValueError):
        env.reset(0, "fly to the moon")


def _place_tip(env: SimEnv, point: np.ndarray) -> None:
    """Moves the instructed cube so that the fingertip point lies at ``point`` from its centre."""
    a = env._cube_qadr[env.colour]
    env.data.qpos[a : a + 3] = env.tip_position() - point
    mujoco.mj_forward(env.model, env.data)


def test_success_reach(env: SimEnv) -> None:
    env.reset(3, "touch the green cube")
    assert not env.success() and env.gripper_to_object() > REACH_THRESHOLD
    _place_tip(env, np.array([0.0, 0.0, REACH_THRESHOLD - 0.005]))
    assert env.success()
    assert env.gripper_to_object() == pytest.approx(REACH_THRESHOLD - 0.005)
    _place_tip(env, np.array([0.0, 0.0, REACH_THRESHOLD + 0.005]))
    assert not env.success()
    assert env.object_to_goal() == 0.0


def test_success_push(env: SimEnv) -> None:
    env.reset(3, "push the blue cube to the yellow zone")
    assert not env.success() and env.object_to_goal() > PUSH_THRESHOLD
    a = env._cube_qadr["blue"]
    zone = env.zone_position()
    for offset, ok in ((PUSH_THRESHOLD - 0.005, True), (PUSH_THRESHOLD + 0.005, False)):
        env.data.qpos[a : a + 2] = zone[:2] + (offset, 0.0)
        mujoco.mj_forward(env.model, env.data)
        assert env.object_to_goal() == pytest.approx(offset)
        assert env.success() is ok
    env.data.qpos[a : a + 3] = (zone[0], zone[1], 0.3)  # lifted above the zone: not pushed there
    mujoco.mj_forward(env.model, env.data)
    assert not env.success()


FK_FIXTURE = Path(__file__).parent / "fixtures" / "sim_arm_fk.json"


def _same_poses(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ca, cb in zip(a, b, strict=True):
        assert ca["q"] == cb["q"]
        np.testing.assert_allclose(ca["position"], cb["position"], rtol=0, atol=1e-12)
        qa, qb = np.array(ca["quaternion_wxyz"]), np.array(cb["quaternion_wxyz"])
        # A quaternion with w ~ 0 may come out with either sign on another machine: same rotation.
        assert min(np.abs(qa - qb).max(), np.abs(qa + qb).max()) < 1e-12, (qa, qb)


def test_fk_fixture_is_current() -> None:
    """tests/fixtures/sim_arm_fk.json (read by tests/kinematics_fk.rs) is what the scene gives now;
    regenerate with ``python -m wam_sim.urdf --fixture tests/fixtures/sim_arm_fk.json``."""
    committed = json.loads(FK_FIXTURE.read_text())
    fresh = fk_fixture()
    assert set(committed) == set(fresh)
    for key in ("urdf", "joint_names", "root_link", "tip_link"):
        assert committed[key] == fresh[key], f"{key} differs: regenerate the fixture"
    assert len(fresh["cases"]) == 20
    _same_poses(committed["cases"], fresh["cases"])
    assert [c["tip_link"] for c in committed["camera_links"]] == CAMERA_NAMES
    for ca, cb in zip(committed["camera_links"], fresh["camera_links"], strict=True):
        assert ca["tip_link"] == cb["tip_link"]
        _same_poses(ca["cases"], cb["cases"])


def test_urdf_matches_the_scene() -> None:
    robot = ET.fromstring(arm_urdf())
    links = [link.get("name") for link in robot.findall("link")]
    joints = {j.get("name"): j for j in robot.findall("joint")}
    children = {j.find("child").get("link") for j in joints.values()}  # type: ignore[union-attr]
    assert [link for link in links if link not in children] == ["link0"]
    assert {"tip", *CAMERA_NAMES} <= set(links)
    for name, lo, hi, vel in zip(
        JOINT_NAMES, JOINT_LOWER, JOINT_UPPER, JOINT_MAX_VELOCITY, strict=True
    ):
        limit = joints[name].find("limit")
        assert limit is not None
        assert [float(limit.get(k, "nan")) for k in ("lower", "upper", "velocity")] == [lo, hi, vel]
    # The env sets each finger to half the opening: the URDF's fingers mimic the gripper likewise.
    for finger in ("finger_left", "finger_right"):
        mimic = joints[finger].find("mimic")
        assert mimic is not None and mimic.get("joint") == "gripper"
        assert float(mimic.get("multiplier", "nan")) == 0.5


# -- perturbations ----------------------------------------------------------------------------------
# Each perturbed episode runs beside an unperturbed twin (another SimEnv, same seed, same commands):
# whatever differs between the two is what the perturbation changed.
P_TIME = 0.3


@pytest.fixture(scope="module")
def twin() -> SimEnv:
    return SimEnv(image_size=(64, 64))


@dataclass
class Snap:
    """One moment of an episode."""

    t: float
    q: np.ndarray
    tip: np.ndarray
    cubes: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]


def _snap(env: SimEnv) -> Snap:
    cubes = {c: env.cube_position(c) for c in CUBE_COLOURS}
    return Snap(env.time, env.qpos(), env.tip_position(), cubes, env.render())


def _episode(
    env: SimEnv, seed: int, instruction: str, p: Perturbation | None
) -> tuple[Snap, Snap, Snap]:
    """Commands a move, steps past P_TIME, commands another; snapshots shortly before P_TIME,
    at P_TIME and 1 s later."""
    env.reset(seed, instruction, p)
    q0 = env.qpos()
    env.set_target(q0 + np.array([0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    env.step(P_TIME - 0.05)
    before = _snap(env)
    env.step(0.05)
    at = _snap(env)
    env.set_target(q0 + np.array([-0.25, 0.0, 0.0, 0.2, 0.0, 0.0, -0.02]))
    env.step(1.0)
    return before, at, _snap(env)


def _same_physics(a: Snap, b: Snap, cubes: bool = True) -> None:
    np.testing.assert_array_equal(a.q, b.q)
    if cubes:
        for c in CUBE_COLOURS:
            np.testing.assert_array_equal(a.cubes[c], b.cubes[c])


def _same(a: Snap, b: Snap) -> None:
    _same_physics(a, b)
    for cam in CAMERA_NAMES:
        np.testing.assert_array_equal(a.frames[cam], b.frames[cam])


def test_perturbation_is_checked() -> None:
    assert set(KINDS) == {
        "cube_moved",
        "cube_removed",
        "arm_blocked",
        "arm_pushed",
        "camera_frozen",
        "camera_occluded",
        "camera_shifted",
    }
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("cube_exploded", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        Perturbation("arm_pushed", -1.0)
    with pytest.raises(ValueError, match="needs a camera"):
        Perturbation("camera_frozen", 1.0, "")
    assert Perturbation("arm_pushed", 1.0, "wrist") == Perturbation("arm_pushed", 1.0)
    assert Perturbation.parse("", 3.0, "wrist") is None
    assert Perturbation.parse("cube_moved", 2, "wrist") == Perturbation("cube_moved", 2.0)
    rows, cols = occlusion_box(64, 64)
    assert (rows.stop - rows.start) * (cols.stop - cols.start) == pytest.approx(64 * 64 / 2, 0.05)
    assert rows.start + rows.stop == 64 and cols.start + cols.stop == 64  # centred


def test_no_perturbation_changes_nothing(env: SimEnv, twin: SimEnv) -> None:
    # A perturbation due after the episode's end, and none at all, after a perturbed episode that
    # changed the model (colours, camera poses): the same episode as a twin that never had one.
    _episode(env, 4, "touch the red cube", Perturbation("cube_removed", 0.0))
    _episode(env, 4, "touch the red cube", Perturbation("camera_shifted", 0.0, "exterior"))
    ref = _episode(twin, 4, "touch the red cube", None)
    for p in (None, Perturbation("arm_blocked", 100.0)):
        got = _episode(env, 4, "touch the red cube", p)
        assert env.perturbation_applied_s is None
        for a, b in zip(got, ref, strict=True):
            _same(a, b)


def test_perturbation_time_does_not_depend_on_the_step_size(env: SimEnv) -> None:
    for chunk in (1, 7, 1000):
        env.reset(2, None, Perturbation("arm_blocked", 0.123))
        while env.time < 0.5:
            env.step_physics(chunk)
        assert env.perturbation_applied_s == pytest.approx(0.124, abs=1e-9)  # its step's end


def test_cube_moved(env: SimEnv, twin: SimEnv) -> None:
    colour = "green"
    ref = _episode(twin, 6, f"touch the {colour} cube", None)
    got = _episode(env, 6, f"touch the {colour} cube", Perturbation("cube_moved", P_TIME))
    assert env.perturbation_applied_s == pytest.approx(P_TIME)
    _same(got[0], ref[0])
    for snap, r in zip(got[1:], ref[1:], strict=True):
        moved = snap.cubes[colour] - r.cubes[colour]
        assert np.linalg.norm(moved[:2]) >= CUBE_MOVE_MIN_M
        assert abs(moved[2]) < 1e-3  # still on the table
        np.testing.assert_array_equal(snap.q, r.q)  # the arm did not notice
        for c in CUBE_COLOURS:
            if c != colour:
                np.testing.assert_array_equal(snap.cubes[c], r.cubes[c])
    np.testing.assert_allclose(got[1].cubes[colour], got[2].cubes[colour], atol=1e-4)  # at rest
    assert _colour_pixels(got[2].frames["exterior"])[colour] >= 3  # seen where it is now
    assert not np.array_equal(got[2].frames["exterior"], ref[2].frames["exterior"])
    # Any seed and family: a free spot at least CUBE_MOVE_MIN_M away, clear of the other cubes,
    # the fingertips and the zone, and the same spot for the same seed.
    for seed in range(12):
        text = instructions()[seed % 6]
        env.reset(seed, text)
        old = env.cube_position()
        env.reset(seed, text, Perturbation("cube_moved", 0.0))
        new = env.cube_position()
        assert np.linalg.norm(new[:2] - old[:2]) >= CUBE_MOVE_MIN_M, seed
        for c in CUBE_COLOURS:
            if c != env.colour:
                assert np.linalg.norm(new[:2] - env.cube_position(c)[:2]) >= 0.1, seed
        assert np.linalg.norm(new[:2] - env.tip_position()[:2]) >= 0.1, seed
        if env.task_family == "push":
            assert env.object_to_goal() > PUSH_THRESHOLD + 0.05 - 1e-9, seed
        assert not env.success()
        env.reset(seed, text, Perturbation("cube_moved", 0.0))
        np.testing.assert_array_equal(env.cube_position(), new)


def test_cube_removed(env: SimEnv, twin: SimEnv) -> None:
    ref = _episode(twin, 1, "touch the red cube", None)
    got = _episode(env, 1, "touch the red cube", Perturbation("cube_removed", P_TIME))
    _same(got[0], ref[0])
    assert _colour_pixels(ref[2].frames["exterior"])["red"] >= 3
    for snap, r in zip(got[1:], ref[1:], strict=True):
        np.testing.assert_array_equal(snap.q, r.q)
        for cam in CAMERA_NAMES:
            counts, counts_ref = _colour_pixels(snap.frames[cam]), _colour_pixels(r.frames[cam])
            assert counts["red"] == 0, cam  # not rendered
            assert {k: v for k, v in counts.items() if k != "red"} == {
                k: v for k, v in counts_ref.items() if k != "red"
            }
        for c in ("green", "blue"):
            np.testing.assert_array_equal(snap.cubes[c], r.cubes[c])
    assert env.gripper_to_object() > 1.5  # out of reach
    np.testing.assert_allclose(got[1].cubes["red"], got[2].cubes["red"], atol=1e-4)  # at rest
    assert not env.success()


def test_arm_blocked(env: SimEnv, twin: SimEnv) -> None:
    ref = _episode(twin, 2, "touch the blue cube", None)
    got = _episode(env, 2, "touch the blue cube", Perturbation("arm_blocked", P_TIME))
    _same(got[0], ref[0])
    np.testing.assert_array_equal(got[1].q, ref[1].q)  # braked where it was
    assert np.abs(got[2].q - got[1].q).max() < 1e-3  # and held there, whatever was commanded
    assert np.abs(ref[2].q - ref[1].q).max() > 0.2  # (the twin followed the command)
    np.testing.assert_allclose(env.target(), got[1].q, atol=1e-6)
    for c in CUBE_COLOURS:  # (one solver for all contacts: the arm's state reaches the last bit)
        np.testing.assert_allclose(got[2].cubes[c], ref[2].cubes[c], rtol=0, atol=1e-8)


def test_arm_pushed(env: SimEnv, twin: SimEnv) -> None:
    seed, text = 3, "touch the green cube"
    p = Perturbation("arm_pushed", P_TIME)
    env.reset(seed, text, p)
    twin.reset(seed, text)
    gap: list[float] = []
    for e in (env, twin):
        e.set_target(e.qpos() + np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    while env.time < P_TIME + 1.5 - 1e-9:
        env.step(0.01)
        twin.step(0.01)
        gap.append(float(np.linalg.norm(env.tip_position() - twin.tip_position())))
        if env.time < P_TIME - 1e-9:
            assert gap[-1] == 0.0
    assert max(gap) > 0.04  # knocked aside
    assert gap[-1] < 0.003  # once: the servos brought it back
    assert not env.data.xfrc_applied.any()
    for c in CUBE_COLOURS:
        np.testing.assert_allclose(env.cube_position(c), twin.cube_position(c), atol=1e-6)


@pytest.mark.parametrize("camera", CAMERA_NAMES)
def test_camera_frozen(env: SimEnv, twin: SimEnv, camera: str) -> None:
    ref = _episode(twin, 5, "touch the red cube", None)
    got = _episode(env, 5, "touch the red cube", Perturbation("camera_frozen", P_TIME, camera))
    other = next(c for c in CAMERA_NAMES if c != camera)
    _same(got[0], ref[0])
    for snap, r in zip(got[1:], ref[1:], strict=True):
        _same_physics(snap, r)
        np.testing.assert_array_equal(snap.frames[camera], got[0].frames[camera])  # last image
        np.testing.assert_array_equal(snap.frames[other], r.frames[other])
    assert not np.array_equal(ref[2].frames[camera], ref[0].frames[camera])  # (the view changed)


@pytest.mark.parametrize("camera", CAMERA_NAMES)
def test_camera_occluded(env: SimEnv, twin: SimEnv, camera: str) -> None:
    ref = _episode(twin, 5, "touch the red cube", None)
    got = _episode(env, 5, "touch the red cube", Perturbation("camera_occluded", P_TIME, camera))
    other = next(c for c in CAMERA_NAMES if c != camera)
    _same(got[0], ref[0])
    rows, cols = occlusion_box(64, 64)
    for snap, r in zip(got[1:], ref[1:], strict=True):
        _same_physics(snap, r)
        img, img_ref = snap.frames[camera], r.frames[camera].copy()
        assert not img[rows, cols].any()  # black
        assert img_ref[rows, cols].min() > 0  # (it was not before)
        img_ref[rows, cols] = 0
        np.testing.assert_array_equal(img, img_ref)  # and nothing else changed
        np.testing.assert_array_equal(snap.frames[other], r.frames[other])


@pytest.mark.parametrize("camera", CAMERA_NAMES)
def test_camera_shifted(env: SimEnv, twin: SimEnv, camera: str) -> None:
    ref = _episode(twin, 5, "push the red cube to the yellow zone", None)
    p = Perturbation("camera_shifted", P_TIME, camera)
    got = _episode(env, 5, "push the red cube to the yellow zone", p)
    other = next(c for c in CAMERA_NAMES if c != camera)
    _same(got[0], ref[0])
    for snap, r in zip(got[1:], ref[1:], strict=True):
        _same_physics(snap, r)
        np.testing.assert_array_equal(snap.frames[other], r.frames[other])
        diff = np.abs(snap.frames[camera].astype(int) - r.frames[camera].astype(int))
        assert diff.mean() > 2.0, diff.mean()  # another view ...
    if camera == "exterior":  # ... of the same scene: every cube and the zone still in view
        assert all(n >= 3 for n in _colour_pixels(got[2].frames[camera]).values())
    # Moved CAMERA_SHIFT_M and turned CAMERA_TILT_RAD.
    cid = env.model.camera(camera).id
    moved = env.data.cam_xpos[cid] - twin.data.cam_xpos[cid]
    assert np.linalg.norm(moved) == pytest.approx(CAMERA_SHIFT_M, abs=1e-6)
    turn = env.data.cam_xmat[cid].reshape(3, 3).T @ twin.data.cam_xmat[cid].reshape(3, 3)
    angle = np.arccos(np.clip((np.trace(turn) - 1.0) / 2.0, -1.0, 1.0))
    assert angle == pytest.approx(CAMERA_TILT_RAD, abs=1e-6)
