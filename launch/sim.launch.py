"""The simulator and wam_policy on it: `ros2 launch wam_policy sim.launch.py [bundle:=...]`.

Starts the MuJoCo sim node (``python3 -m wam_sim.node`` from the installed share/wam_policy/sim;
needs the Python packages mujoco, numpy and pillow) and the wam_policy node with
config/sim_policy.yaml, then::

    ros2 service call /wam_sim/reset_episode wam_policy/srv/ResetEpisode \
        "{seed: 1, instruction: 'touch the red cube'}"
    ros2 service call /wam_policy/enable std_srvs/srv/SetBool "{data: true}"

With ``namespace:=sim1`` both nodes run in /sim1 and talk over /sim1/joint_states,
/sim1/cameras/..., /sim1/joint_trajectory (the services become /sim1/wam_sim/reset_episode and
/sim1/wam_policy/enable), so that several stacks share one ROS domain. /clock stays global.
"""

import os
from typing import Any

import yaml
from launch.actions import (
    DeclareLaunchArgument,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_context import LaunchContext
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

# The topics between the sim and the policy. The sim names them absolutely, and so does
# config/sim_policy.yaml; remapped to the same names relative to the node's namespace, they are the
# namespace's own (unchanged without a namespace). /clock is left global.
STACK_TOPICS = (
    "joint_states",
    "cameras/exterior/image_raw",
    "cameras/wrist/image_raw",
    "instruction",
    "joint_trajectory",
    "forward_position_controller/commands",
)
REMAPPINGS = [("/" + topic, topic) for topic in STACK_TOPICS]


def node_parameters(path: str, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` that the params file ``path`` gives ``node_name`` (its ``/**``
    section, then the node's own). Passed to launch_ros as a dict, they are written under the node's
    fully qualified name: a file keyed by the plain node name would not reach an rclpy node once it
    is namespaced."""
    with open(path, encoding="utf-8") as f:
        tree = yaml.safe_load(f) or {}
    out: dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name):
        section = tree.get(key) or {}
        out.update(section.get("ros__parameters") or {})
    return out


def start_sim(context: LaunchContext) -> list[Node]:
    params: dict[str, Any] = node_parameters(
        LaunchConfiguration("sim_params_file").perform(context), "wam_sim"
    )
    params["seed"] = ParameterValue(LaunchConfiguration("seed"), value_type=int)
    params["instruction"] = ParameterValue(LaunchConfiguration("instruction"), value_type=str)
    sim_path = PathJoinSubstitution([FindPackageShare("wam_policy"), "sim"])
    return [
        Node(
            executable="python3",
            arguments=["-m", "wam_sim.node"],
            name="wam_sim",
            exec_name="wam_sim",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[params],
            remappings=REMAPPINGS,
            additional_env={
                "PYTHONPATH": [
                    sim_path,
                    os.pathsep,
                    EnvironmentVariable("PYTHONPATH", default_value=""),
                ],
            },
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("wam_policy")
    args = [
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of both nodes and of the topics between them",
        ),
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
    policy = Node(
        package="wam_policy",
        executable="wam_policy_node",
        name="wam_policy",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {"bundle_path": LaunchConfiguration("bundle")},
        ],
        remappings=REMAPPINGS,
    )
    return LaunchDescription(
        [
            *args,
            SetEnvironmentVariable("MUJOCO_GL", LaunchConfiguration("mujoco_gl")),
            SetEnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("transport_profile")
            ),
            OpaqueFunction(function=start_sim),
            policy,
        ]
    )
