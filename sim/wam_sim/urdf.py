"""URDF of the simulated arm, built from the compiled MuJoCo model (not hand-written, so it cannot
drift from the scene). The sim node publishes it on ``robot_description``; wam_policy reads joint
limits from it and draws the planned end-effector path with its forward kinematics.

Links are the MJCF bodies from ``link0`` (the root) down, each link frame the body frame; the end
effector is the link ``tip`` at the site the sim measures reach with (the point between the
fingertips). The gripper, in the sim a tendon over two finger slides (its value is the opening, the
sum of both), is a prismatic joint ``gripper`` to a frame-only link; the fingers mimic it with half
its motion each. Each camera is a link named like the frame_id of its images, in the ROS optical
convention (z forward, x right, y down; a MuJoCo camera looks along -z with y up).

``python -m wam_sim.urdf`` prints the URDF; ``--fixture PATH`` writes the forward-kinematics fixture
of tests/kinematics_fk.rs (poses of ``tip`` as MuJoCo computes them, in the root link frame).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from .scene import (
    CAMERA_NAMES,
    HOME,
    JOINT_LOWER,
    JOINT_MAX_VELOCITY,
    JOINT_NAMES,
    JOINT_UPPER,
    scene_xml,
)

ROOT_LINK = "link0"
TIP_LINK = "tip"
# The gripper joint's child: a frame with nothing attached, since the opening is no body of its own.
GRIPPER_LINK = "gripper_opening"
GRIPPER = JOINT_NAMES[6]
FIXTURE_SEED = 12
FIXTURE_CASES = 20
# Cases per camera link in the fixture: the exterior camera's orientation (roll and yaw both
# nonzero) is what checks the rpy convention; the arm's own origins only turn about one axis each.
FIXTURE_CAMERA_CASES = 5


def _num(v: float) -> str:
    # 12 significant digits: exact far below the 1e-6 the FK is checked to, and stable against
    # last-bit differences between machines, so the committed fixture's text does not depend on
    # where it was made. Rounding residue such as 1.6e-17 (quaternion products) is written as 0
    # for the same reason.
    v = float(v)
    return "0" if abs(v) < 1e-12 else f"{v:.12g}"


def _vec(v: Sequence[float] | np.ndarray) -> str:
    return " ".join(_num(x) for x in v)


def _rpy(quat_wxyz: np.ndarray) -> tuple[float, float, float]:
    """URDF roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) of a MuJoCo quaternion."""
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat_wxyz, dtype=float))
    r = mat.reshape(3, 3)
    cos_pitch = math.hypot(r[0, 0], r[1, 0])
    pitch = math.atan2(-r[2, 0], cos_pitch)
    if cos_pitch > 1e-9:
        return math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])
    # Gimbal lock (pitch +-90 degrees): roll and yaw turn about one axis; put it all in roll.
    return math.atan2(-r[1, 2], r[1, 1]), pitch, 0.0


def _origin(pos: Sequence[float] | np.ndarray, quat_wxyz: np.ndarray) -> str:
    return f'<origin xyz="{_vec(pos)}" rpy="{_vec(_rpy(quat_wxyz))}"/>'


def _model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(scene_xml())


def _relative(
    pos: np.ndarray, mat: np.ndarray, parent_pos: np.ndarray, parent_mat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Position and wxyz quaternion (w >= 0) of a world frame (pos, 3x3 mat) in a parent's."""
    r0 = parent_mat.reshape(3, 3)
    rel = r0.T @ mat.reshape(3, 3)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rel.reshape(9))
    return r0.T @ (pos - parent_pos), (-quat if quat[0] < 0 else quat)


# MuJoCo camera frame -> optical frame: half a turn about x.
_OPTICAL = np.diag([1.0, -1.0, -1.0])


def _camera_frame(
    m: mujoco.MjModel, d: mujoco.MjData, camera: str
) -> tuple[np.ndarray, np.ndarray]:
    """World position and 3x3 optical-frame rotation of a camera (after mj_kinematics and
    mj_camlight)."""
    c = m.camera(camera).id
    return d.cam_xpos[c].copy(), d.cam_xmat[c].reshape(3, 3) @ _OPTICAL


def _camera_parent(m: mujoco.MjModel, camera: str) -> int:
    """The body a camera link hangs from. A camera that turns to track a target stays put relative
    to a body only when its body and target are both welded to the world: then it hangs from the
    root link."""
    c = m.camera(camera).id
    body = int(m.cam_bodyid[c])
    if m.cam_mode[c] == mujoco.mjtCamLight.mjCAMLIGHT_FIXED:
        return body
    target = int(m.cam_targetbodyid[c])
    if m.body_weldid[body] == 0 and (target < 0 or m.body_weldid[target] == 0):
        return m.body(ROOT_LINK).id
    raise ValueError(f"camera {camera!r} moves relative to every body: no URDF link can carry it")


def _subtree(m: mujoco.MjModel, root: int) -> list[int]:
    """Bodies below ``root`` (excluded), parents before children (as MuJoCo numbers them)."""
    inside = {root}
    out: list[int] = []
    for b in range(root + 1, m.nbody):
        if int(m.body_parentid[b]) in inside:
            inside.add(b)
            out.append(b)
    return out


def _gripper_fingers(m: mujoco.MjModel) -> dict[str, float]:
    """Finger joint -> its share of the gripper opening (the tendon is the sum of the fingers'
    slides and an equality keeps them equal, so each moves opening / sum of coefficients)."""
    t = m.tendon(GRIPPER).id
    adr, num = int(m.tendon_adr[t]), int(m.tendon_num[t])
    joints = [int(m.wrap_objid[i]) for i in range(adr, adr + num)]
    total = float(sum(m.wrap_prm[adr : adr + num]))
    return {m.joint(j).name: 1.0 / total for j in joints}


def _effort(m: mujoco.MjModel, joint: str) -> float:
    """The force limit of the actuator driving ``joint`` (for a finger, the gripper tendon's)."""
    for a in range(m.nu):
        trn = int(m.actuator_trnid[a, 0])
        kind = m.actuator_trntype[a]
        target = (
            m.joint(trn).name
            if kind == mujoco.mjtTrn.mjTRN_JOINT
            else m.tendon(trn).name
            if kind == mujoco.mjtTrn.mjTRN_TENDON
            else ""
        )
        if target == joint or (target == GRIPPER and joint in _gripper_fingers(m)):
            return float(np.abs(m.actuator_forcerange[a]).max())
    raise ValueError(f"no actuator drives joint {joint!r}")


def _limit(lower: float, upper: float, velocity: float, effort: float) -> str:
    return (
        f'<limit lower="{_num(lower)}" upper="{_num(upper)}" velocity="{_num(velocity)}" '
        f'effort="{_num(effort)}"/>'
    )


def _visuals(m: mujoco.MjModel, body: int, materials: dict[tuple[float, ...], str]) -> list[str]:
    """Boxes, cylinders and spheres of the body's geoms (a capsule: a cylinder and two spheres)."""
    out: list[str] = []
    for g in range(int(m.body_geomadr[body]), int(m.body_geomadr[body] + m.body_geomnum[body])):
        # Colours are float32 in MuJoCo: 4 digits say what the scene says (0.28, not
        # 0.280000001192).
        rgba = tuple(round(float(x), 4) for x in m.geom_rgba[g])
        material = materials.setdefault(rgba, f"colour{len(materials)}")
        size, pos, quat = m.geom_size[g], m.geom_pos[g], m.geom_quat[g]
        kind = m.geom_type[g]
        shapes: list[tuple[np.ndarray, str]] = []
        if kind == mujoco.mjtGeom.mjGEOM_BOX:
            shapes.append((pos, f'<box size="{_vec(2 * size)}"/>'))
        elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
            shapes.append(
                (pos, f'<cylinder radius="{_num(size[0])}" length="{_num(2 * size[1])}"/>')
            )
        elif kind == mujoco.mjtGeom.mjGEOM_SPHERE:
            shapes.append((pos, f'<sphere radius="{_num(size[0])}"/>'))
        elif kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
            shapes.append(
                (pos, f'<cylinder radius="{_num(size[0])}" length="{_num(2 * size[1])}"/>')
            )
            mat = np.zeros(9)
            mujoco.mju_quat2Mat(mat, quat)
            half_axis = mat.reshape(3, 3)[:, 2] * size[1]
            for end in (pos + half_axis, pos - half_axis):
                shapes.append((end, f'<sphere radius="{_num(size[0])}"/>'))
        else:
            raise ValueError(
                f"geom {g} of body {m.body(body).name!r}: type {kind} has no URDF shape"
            )
        for at, geometry in shapes:
            out.append(
                f"    <visual>{_origin(at, quat)}<geometry>{geometry}</geometry>"
                f'<material name="{material}"/></visual>'
            )
    return out


def _inertial(m: mujoco.MjModel, body: int) -> list[str]:
    mass = float(m.body_mass[body])
    if mass <= 0.0:
        return []
    ixx, iyy, izz = (_num(x) for x in m.body_inertia[body])
    return [
        f"    <inertial>{_origin(m.body_ipos[body], m.body_iquat[body])}"
        f'<mass value="{_num(mass)}"/><inertia ixx="{ixx}" ixy="0" ixz="0" iyy="{iyy}" iyz="0" '
        f'izz="{izz}"/></inertial>'
    ]


def arm_urdf() -> str:
    """The URDF of the simulated arm (root link ``link0``, end effector ``tip``)."""
    m = _model()
    root = m.body(ROOT_LINK).id
    fingers = _gripper_fingers(m)
    velocity = dict(zip(JOINT_NAMES, JOINT_MAX_VELOCITY, strict=True))
    materials: dict[tuple[float, ...], str] = {}
    links: list[str] = []
    joints: list[str] = []

    def link(name: str, body: int | None) -> None:
        inner = [] if body is None else _inertial(m, body) + _visuals(m, body, materials)
        if inner:
            links.append(f'  <link name="{name}">\n' + "\n".join(inner) + "\n  </link>")
        else:
            links.append(f'  <link name="{name}"/>')

    link(ROOT_LINK, root)
    for b in _subtree(m, root):
        name, parent = m.body(b).name, m.body(int(m.body_parentid[b])).name
        head = f'<parent link="{parent}"/><child link="{name}"/>' + _origin(
            m.body_pos[b], m.body_quat[b]
        )
        link(name, b)
        if m.body_jntnum[b] == 0:
            joints.append(f'  <joint name="{parent}_to_{name}" type="fixed">{head}</joint>')
            continue
        if m.body_jntnum[b] > 1:
            raise ValueError(f"body {name!r} has {m.body_jntnum[b]} joints; URDF allows one")
        j = int(m.body_jntadr[b])
        jname, jtype = m.joint(j).name, m.jnt_type[j]
        if np.any(m.jnt_pos[j] != 0.0):
            # URDF puts the joint at the child link's origin; the scene's joints all are.
            raise ValueError(f"joint {jname!r} lies off its body's origin")
        axis = f'<axis xyz="{_vec(m.jnt_axis[j])}"/>'
        lower, upper = (float(x) for x in m.jnt_range[j])
        if jtype == mujoco.mjtJoint.mjJNT_HINGE:
            kind = "revolute" if m.jnt_limited[j] else "continuous"
        elif jtype == mujoco.mjtJoint.mjJNT_SLIDE:
            kind = "prismatic"
        else:
            raise ValueError(f"joint {jname!r}: type {jtype} is neither hinge nor slide")
        if jname in fingers:
            share = fingers[jname]
            extra = (
                _limit(lower, upper, velocity[GRIPPER] * share, _effort(m, jname))
                + f'<mimic joint="{GRIPPER}" multiplier="{_num(share)}" offset="0"/>'
            )
        else:
            extra = _limit(lower, upper, velocity[jname], _effort(m, jname))
        joints.append(f'  <joint name="{jname}" type="{kind}">{head}{axis}{extra}</joint>')

    hand = int(m.site_bodyid[m.site(TIP_LINK).id])
    hand_name = m.body(hand).name
    site = m.site(TIP_LINK).id
    link(TIP_LINK, None)
    joints.append(
        f'  <joint name="{hand_name}_to_{TIP_LINK}" type="fixed"><parent link="{hand_name}"/>'
        f'<child link="{TIP_LINK}"/>{_origin(m.site_pos[site], m.site_quat[site])}</joint>'
    )
    # Camera poses relative to their parents are constant (_camera_parent checks): read them once.
    d = mujoco.MjData(m)
    mujoco.mj_kinematics(m, d)
    mujoco.mj_camlight(m, d)
    for camera in CAMERA_NAMES:
        parent = _camera_parent(m, camera)
        pos, quat = _relative(*_camera_frame(m, d, camera), d.xpos[parent], d.xmat[parent])
        link(camera, None)
        joints.append(
            f'  <joint name="{m.body(parent).name}_to_{camera}" type="fixed">'
            f'<parent link="{m.body(parent).name}"/><child link="{camera}"/>'
            f"{_origin(pos, quat)}</joint>"
        )
    link(GRIPPER_LINK, None)
    joints.append(
        f'  <joint name="{GRIPPER}" type="prismatic"><parent link="{hand_name}"/>'
        f'<child link="{GRIPPER_LINK}"/><origin xyz="0 0 0" rpy="0 0 0"/><axis xyz="0 1 0"/>'
        + _limit(JOINT_LOWER[6], JOINT_UPPER[6], velocity[GRIPPER], _effort(m, GRIPPER))
        + "</joint>"
    )

    colours = [
        f'  <material name="{n}"><color rgba="{_vec(rgba)}"/></material>'
        for rgba, n in materials.items()
    ]
    return "\n".join(
        [
            '<?xml version="1.0"?>',
            "<!-- Generated by wam_sim.urdf from the MuJoCo scene: do not edit. -->",
            '<robot name="wam_sim_arm">',
            *colours,
            *links,
            *joints,
            "</robot>",
            "",
        ]
    )


def _pose_case(q: np.ndarray, position: np.ndarray, quat: np.ndarray) -> dict[str, list[float]]:
    return {"q": q.tolist(), "position": position.tolist(), "quaternion_wxyz": quat.tolist()}


def fixture() -> dict[str, Any]:
    """URDF, joint names, tip link and MuJoCo's tip poses at HOME and seeded joint configurations,
    in the root link frame; the same for the camera links (first FIXTURE_CAMERA_CASES ones)."""
    m = _model()
    d = mujoco.MjData(m)
    arm_qadr = [int(m.jnt_qposadr[m.joint(n).id]) for n in JOINT_NAMES[:6]]
    fingers = _gripper_fingers(m)
    finger_qadr = {int(m.jnt_qposadr[m.joint(n).id]): share for n, share in fingers.items()}
    root, site = m.body(ROOT_LINK).id, m.site(TIP_LINK).id
    rng = np.random.default_rng(FIXTURE_SEED)
    lower, upper = np.array(JOINT_LOWER), np.array(JOINT_UPPER)
    configs = [np.array(HOME, dtype=float)] + [
        rng.uniform(lower, upper) for _ in range(FIXTURE_CASES - 1)
    ]
    cases: list[dict[str, list[float]]] = []
    cameras: dict[str, list[dict[str, list[float]]]] = {c: [] for c in CAMERA_NAMES}
    for k, q in enumerate(configs):
        d.qpos[:] = m.qpos0
        d.qpos[arm_qadr] = q[:6]
        for adr, share in finger_qadr.items():
            d.qpos[adr] = q[6] * share
        mujoco.mj_kinematics(m, d)
        mujoco.mj_camlight(m, d)
        at_root = (d.xpos[root], d.xmat[root])
        cases.append(_pose_case(q, *_relative(d.site_xpos[site], d.site_xmat[site], *at_root)))
        if k < FIXTURE_CAMERA_CASES:
            for c in CAMERA_NAMES:
                cameras[c].append(_pose_case(q, *_relative(*_camera_frame(m, d, c), *at_root)))
    return {
        "urdf": arm_urdf(),
        "joint_names": list(JOINT_NAMES),
        "root_link": ROOT_LINK,
        "tip_link": TIP_LINK,
        "cases": cases,
        "camera_links": [{"tip_link": c, "cases": cameras[c]} for c in CAMERA_NAMES],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m wam_sim.urdf``."""
    parser = argparse.ArgumentParser(prog="python -m wam_sim.urdf", description=__doc__)
    parser.add_argument("--fixture", type=Path, help="write the FK fixture (JSON) here")
    args = parser.parse_args(argv)
    if args.fixture is None:
        sys.stdout.write(arm_urdf())
        return 0
    args.fixture.parent.mkdir(parents=True, exist_ok=True)
    args.fixture.write_text(json.dumps(fixture(), indent=1) + "\n")
    print(f"wrote {args.fixture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
