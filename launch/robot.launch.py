"""Start wam_policy on a robot: `ros2 launch wam_policy robot.launch.py bundle:=/path/to/bundle`.

`managed:=true` starts the node as a lifecycle node (unconfigured until ~/change_state configures
it); `rviz:=true` also starts rviz2 with config/wam_policy.rviz. `namespace:=arm1` puts the node
(and rviz) in /arm1: config/robot.yaml's relative topics and the controller's topic resolve there.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("wam_policy")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "robot.yaml"]),
            description="Parameters file (see config/robot.yaml)",
        ),
        DeclareLaunchArgument(
            "bundle",
            default_value=PathJoinSubstitution([share, "models", "wam_test"]),
            description="Model bundle folder (wam.yaml + ONNX files)",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            description="Follow /clock (Gazebo, Isaac Sim, ros2 bag play --clock)",
        ),
        DeclareLaunchArgument(
            "transport_profile",
            default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_camera_frames.xml"]),
            ),
            description="Fast DDS profile (FASTRTPS_DEFAULT_PROFILES_FILE) of what this launch starts: "
            "by default the one sized for camera frames; camera drivers need it too (README)",
        ),
        DeclareLaunchArgument(
            "controller",
            default_value="joint_trajectory_controller",
            description="joint_trajectory_controller whose topic receives the chunks "
            "(<namespace>/<controller>/joint_trajectory)",
        ),
        DeclareLaunchArgument(
            "managed",
            default_value="false",
            description="Start as a lifecycle node: unconfigured until configured and activated "
            "through ~/change_state (a lifecycle manager, or `ros2 lifecycle set`)",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            description="Also start rviz2 with config/wam_policy.rviz (cameras, predicted frames, "
            "preview, planned path)",
        ),
    ]
    node = Node(
        package="wam_policy",
        executable="wam_policy_node",
        name="wam_policy",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "bundle_path": LaunchConfiguration("bundle"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
                "managed": LaunchConfiguration("managed"),
            },
        ],
        remappings=[
            # Relative: in a namespace, that namespace's controller.
            ("joint_trajectory", [LaunchConfiguration("controller"), "/joint_trajectory"]),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        arguments=["-d", PathJoinSubstitution([share, "config", "wam_policy.rviz"])],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    profile = SetEnvironmentVariable(
        "FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("transport_profile")
    )
    return LaunchDescription(args + [profile, node, rviz])
