"""The MJCF scene: a Franka-like 6-joint arm with a parallel gripper, a table, cubes and a zone."""

from __future__ import annotations

JOINT_NAMES: list[str] = ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper"]
CAMERA_NAMES: list[str] = ["exterior", "wrist"]
CUBE_COLOURS: list[str] = ["red", "green", "blue"]

# Joint limits of the arm (JOINT_NAMES order; the gripper is the finger opening in metres).
JOINT_LOWER: list[float] = [-2.8973, -1.7628, -2.8973, -3.0, -2.8973, -0.0175, 0.0]
JOINT_UPPER: list[float] = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7, 0.04]
JOINT_MAX_VELOCITY: list[float] = [2.0, 2.0, 2.0, 2.0, 2.5, 2.5, 0.2]

# Start pose (arm above the table, gripper pointing down, open).
HOME: list[float] = [0.0, -0.5, 0.0, -2.3, 0.0, 1.8, 0.04]

TIMESTEP = 0.002
CUBE_HALF = 0.02
ZONE_RADIUS = 0.06
TABLE_TOP = 0.0

_RGBA = {
    "red": "0.85 0.08 0.08 1",
    "green": "0.08 0.75 0.12 1",
    "blue": "0.10 0.20 0.90 1",
}


def _cube(colour: str, x: float) -> str:
    return f"""
    <body name="cube_{colour}" pos="{x} 0 {TABLE_TOP + CUBE_HALF}">
      <freejoint name="cube_{colour}_free"/>
      <geom name="cube_{colour}" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}"
            rgba="{_RGBA[colour]}" mass="0.1" contype="1" conaffinity="3"
            friction="0.8 0.005 0.0001" condim="4"/>
    </body>"""


def scene_xml() -> str:
    """Returns the MJCF of the whole scene."""
    # Joint gains: (kp, kv) per arm joint.
    gains = [(2000, 150), (2000, 150), (1500, 100), (1500, 100), (600, 40), (600, 40)]
    limits = zip(JOINT_LOWER[:6], JOINT_UPPER[:6], strict=True)
    arm_acts = "\n".join(
        f'    <position name="{n}" joint="{n}" kp="{kp}" kv="{kv}" '
        f'ctrlrange="{lo} {hi}" forcerange="-200 200"/>'
        for n, (kp, kv), (lo, hi) in zip(JOINT_NAMES[:6], gains, limits, strict=True)
    )
    cubes = "".join(_cube(c, 0.4 + 0.1 * i) for i, c in enumerate(CUBE_COLOURS))
    rng = [f"{lo} {hi}" for lo, hi in zip(JOINT_LOWER, JOINT_UPPER, strict=True)]
    link = 'contype="2" conaffinity="0" rgba="0.92 0.92 0.92 1"'
    dark = 'contype="2" conaffinity="0" rgba="0.25 0.25 0.28 1"'
    return f"""<mujoco model="wam_sim">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast"/>
  <visual>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
    <quality shadowsize="1024"/>
    <global offwidth="640" offheight="480"/>
  </visual>
  <default>
    <joint armature="0.1" damping="1.0"/>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001"/>
  </default>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.55 0.55 0.58" rgb2="0.5 0.5 0.53"
             width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="4 4"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.6 -0.6 1.6" dir="-0.3 0.4 -1" directional="true"
           diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor"
          contype="1" conaffinity="1"/>
    <body name="table" pos="0.45 0 {TABLE_TOP - 0.025}">
      <geom name="table" type="box" size="0.45 0.6 0.025" rgba="0.62 0.50 0.38 1"
            contype="1" conaffinity="1" friction="0.8 0.005 0.0001"/>
      <geom name="table_leg" type="box" size="0.4 0.55 0.36" pos="0 0 -0.385"
            rgba="0.45 0.36 0.28 1" contype="0" conaffinity="0"/>
    </body>
    <body name="zone" mocap="true" pos="0.5 0.2 {TABLE_TOP + 0.0005}">
      <geom name="zone" type="cylinder" size="{ZONE_RADIUS} 0.0005" rgba="0.95 0.85 0.1 1"
            contype="0" conaffinity="0"/>
    </body>
    <!-- The exterior camera frames the cubes' workspace (x 0.37..0.62, y -0.25..0.25): at 64x64 a
         cube is ~4 pixels wide (a wider view made them 2-3 pixels and the policy could not find them). -->
    <body name="look" pos="0.48 0 0.04"/>
    <camera name="exterior" mode="targetbody" target="look" pos="0.95 -0.3 0.55" fovy="45"/>
    <body name="link0" pos="0 0 {TABLE_TOP}">
      <geom type="cylinder" size="0.07 0.07" pos="0 0 0.07" {dark}/>
      <body name="link1" pos="0 0 0.333" gravcomp="1">
        <inertial pos="0 0 -0.08" mass="2" diaginertia="0.02 0.02 0.01"/>
        <joint name="joint1" axis="0 0 1" range="{rng[0]}"/>
        <geom type="capsule" fromto="0 0 -0.26 0 0 0" size="0.06" {link}/>
        <body name="link2" quat="1 -1 0 0" gravcomp="1">
          <inertial pos="0 -0.1 0" mass="2" diaginertia="0.02 0.02 0.01"/>
          <joint name="joint2" axis="0 0 1" range="{rng[1]}"/>
          <geom type="capsule" fromto="0 0 0 0 -0.2 0" size="0.06" {link}/>
          <body name="link3" pos="0 -0.316 0" quat="1 1 0 0" gravcomp="1">
            <inertial pos="0.04 0 -0.06" mass="2" diaginertia="0.02 0.02 0.01"/>
            <joint name="joint3" axis="0 0 1" range="{rng[2]}"/>
            <geom type="capsule" fromto="0 0 -0.12 0.08 0 0" size="0.055" {link}/>
            <body name="link4" pos="0.0825 0 0" quat="1 1 0 0" gravcomp="1">
              <inertial pos="-0.04 0.05 0" mass="2" diaginertia="0.02 0.02 0.01"/>
              <joint name="joint4" axis="0 0 1" range="{rng[3]}"/>
              <geom type="capsule" fromto="0 0 0 -0.08 0.1 0" size="0.055" {dark}/>
              <body name="link5" pos="-0.0825 0.384 0" quat="1 -1 0 0" gravcomp="1">
                <inertial pos="0 0.04 -0.1" mass="1.5" diaginertia="0.015 0.015 0.005"/>
                <joint name="joint5" axis="0 0 1" range="{rng[4]}"/>
                <geom type="capsule" fromto="0 0 -0.24 0 0.0 -0.02" size="0.05" {link}/>
                <body name="link6" quat="1 1 0 0" gravcomp="1">
                  <inertial pos="0.06 0 0" mass="1" diaginertia="0.005 0.005 0.003"/>
                  <joint name="joint6" axis="0 0 1" range="{rng[5]}"/>
                  <geom type="capsule" fromto="0 0 -0.03 0.088 0 0" size="0.045" {dark}/>
                  <body name="link7" pos="0.088 0 0" quat="1 1 0 0" gravcomp="1">
                    <inertial pos="0 0 0.05" mass="0.5" diaginertia="0.002 0.002 0.002"/>
                    <geom type="cylinder" size="0.045 0.03" pos="0 0 0.04" {link}/>
                    <body name="hand" pos="0 0 0.107" gravcomp="1">
                      <inertial pos="0 0 0.03" mass="0.5" diaginertia="0.002 0.002 0.001"/>
                      <geom name="palm" type="box" size="0.022 0.09 0.025" pos="0 0 0.03" {link}/>
                      <camera name="wrist" pos="0.07 0 0.02" quat="0 1 0 0" fovy="75"/>
                      <site name="tip" pos="0 0 0.1034" size="0.005" rgba="1 0 1 0"/>
                      <body name="finger_left" pos="0 0 0.0584" gravcomp="1">
                        <inertial pos="0 0.01 0.025" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>
                        <joint name="finger_left" type="slide" axis="0 1 0" range="0 0.02"
                               armature="0.01" damping="2"/>
                        <geom name="finger_left" type="box" size="0.011 0.006 0.025"
                              pos="0 0.006 0.025" {dark} friction="1 0.005 0.0001"/>
                      </body>
                      <body name="finger_right" pos="0 0 0.0584" gravcomp="1">
                        <inertial pos="0 -0.01 0.025" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>
                        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 0.02"
                               armature="0.01" damping="2"/>
                        <geom name="finger_right" type="box" size="0.011 0.006 0.025"
                              pos="0 -0.006 0.025" {dark} friction="1 0.005 0.0001"/>
                      </body>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
{cubes}
  </worldbody>
  <tendon>
    <fixed name="gripper">
      <joint joint="finger_left" coef="1"/>
      <joint joint="finger_right" coef="1"/>
    </fixed>
  </tendon>
  <equality>
    <joint joint1="finger_left" joint2="finger_right" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <contact>
    <exclude body1="hand" body2="finger_left"/>
    <exclude body1="hand" body2="finger_right"/>
  </contact>
  <actuator>
{arm_acts}
    <position name="gripper" tendon="gripper" kp="300" kv="10" ctrlrange="0 0.04"
              forcerange="-20 20"/>
  </actuator>
</mujoco>
"""
