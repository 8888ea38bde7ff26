"""Start wam_policy on a robot: `ros2 launch wam_policy robot.launch.py bundle:=/path/to/bundle`."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
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
            description="joint_trajectory_controller whose topic receives the chunks",
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
            },
        ],
        remappings=[
            (
                "joint_trajectory",
                ["/", LaunchConfiguration("controller"), "/joint_trajectory"],
            ),
        ],
    )
    profile = SetEnvironmentVariable(
        "FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("transport_profile")
    )
    return LaunchDescription(args + [profile, node])
