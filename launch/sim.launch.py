"""The simulator and wam_policy on it: `ros2 launch wam_policy sim.launch.py [bundle:=...]`.

Starts the MuJoCo sim node (``python3 -m wam_sim.node`` from the installed share/wam_policy/sim;
needs the Python packages mujoco, numpy and pillow) and the wam_policy node with
config/sim_policy.yaml, then::

    ros2 service call /wam_sim/reset_episode wam_policy/srv/ResetEpisode \
        "{seed: 1, instruction: 'touch the red cube'}"
    ros2 service call /wam_policy/enable std_srvs/srv/SetBool "{data: true}"
"""

import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("wam_policy")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "sim_policy.yaml"]),
            description="wam_policy parameters (see config/sim_policy.yaml)",
        ),
        DeclareLaunchArgument(
            "bundle",
            default_value=PathJoinSubstitution([share, "models", "wam_sim"]),
            description="Model bundle folder (wam.yaml + ONNX files)",
        ),
        DeclareLaunchArgument(
            "sim_params_file",
            default_value=PathJoinSubstitution([share, "config", "sim.yaml"]),
            description="wam_sim parameters (see config/sim.yaml)",
        ),
        DeclareLaunchArgument("seed", default_value="0", description="Seed of the first episode"),
        DeclareLaunchArgument(
            "instruction",
            default_value="touch the red cube",
            description="Instruction of the first episode",
        ),
        DeclareLaunchArgument("mujoco_gl", default_value="egl", description="MUJOCO_GL of the sim"),
        DeclareLaunchArgument(
            "transport_profile",
            default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_camera_frames.xml"]),
            ),
            description="Fast DDS profile of the sim and the node (sized for camera frames)",
        ),
    ]
    sim_path = PathJoinSubstitution([share, "sim"])
    sim = ExecuteProcess(
        cmd=[
            "python3",
            "-m",
            "wam_sim.node",
            "--ros-args",
            "--params-file",
            LaunchConfiguration("sim_params_file"),
            "-p",
            ["seed:=", LaunchConfiguration("seed")],
            "-p",
            ["instruction:='", LaunchConfiguration("instruction"), "'"],
        ],
        name="wam_sim",
        output="screen",
        additional_env={
            "PYTHONPATH": [
                sim_path,
                os.pathsep,
                EnvironmentVariable("PYTHONPATH", default_value=""),
            ],
        },
    )
    policy = Node(
        package="wam_policy",
        executable="wam_policy_node",
        name="wam_policy",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {"bundle_path": LaunchConfiguration("bundle")},
        ],
    )
    return LaunchDescription(
        [
            *args,
            SetEnvironmentVariable("MUJOCO_GL", LaunchConfiguration("mujoco_gl")),
            SetEnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("transport_profile")
            ),
            sim,
            policy,
        ]
    )
