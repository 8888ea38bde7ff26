"""The MuJoCo world: scene, cameras, colours, determinism, success predicates."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
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
