"""wam_sim: a MuJoCo world (arm, gripper, cubes, zone, two cameras), a scripted expert, a
joint_trajectory_controller-like follower, perturbations of an episode and a ROS 2 sim node."""

from .env import MAX_SECONDS, PUSH_THRESHOLD, REACH_THRESHOLD, TASK_FAMILIES, SimEnv, instructions
from .expert import Episode, Expert, expert_episode
from .follower import TrajectoryFollower
from .perturb import Perturbation
from .scene import CAMERA_NAMES, JOINT_LOWER, JOINT_MAX_VELOCITY, JOINT_NAMES, JOINT_UPPER

__all__ = [
    "CAMERA_NAMES",
    "JOINT_LOWER",
    "JOINT_MAX_VELOCITY",
    "JOINT_NAMES",
    "JOINT_UPPER",
    "MAX_SECONDS",
    "PUSH_THRESHOLD",
    "REACH_THRESHOLD",
    "TASK_FAMILIES",
    "Episode",
    "Expert",
    "Perturbation",
    "SimEnv",
    "TrajectoryFollower",
    "expert_episode",
    "instructions",
]
