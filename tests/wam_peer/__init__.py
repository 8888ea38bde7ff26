"""Test peer of the wam_policy ROS 2 node: runs the node binary as a child process
(:class:`NodeProcess`) and talks to it from an rclpy node in its own context and domain
(:class:`Peer`). ``python -m wam_peer.demo`` runs a closed-loop demo against the test bundle.

Needs the environment of ``scripts/env.sh`` (rclpy, the package's messages).
"""

from __future__ import annotations

from .expected import (
    ACTION_DT,
    BUNDLE_JOINTS,
    HORIZON,
    VIDEO_DT,
    Expected,
    expected_for,
    predicted_u8,
    trajectory_arrays,
    trajectory_error,
)
from .images import (
    ENCODINGS,
    checker_rgb,
    compressed_image,
    encode_pixels,
    gradient_rgb,
    png_bytes,
    raw_image,
    rgb_of,
    uniform_rgb,
)
from .node_process import REPO, TEST_BUNDLE, WIDE_LIMITS, NodeProcess, node_binary, params_yaml
from .peer import (
    Peer,
    PeerTopics,
    Received,
    SimClock,
    fixed_frame,
    fixed_joints,
    joint_state,
    stamp_seconds,
    time_of,
)

__all__ = [
    "ACTION_DT",
    "BUNDLE_JOINTS",
    "ENCODINGS",
    "HORIZON",
    "REPO",
    "TEST_BUNDLE",
    "VIDEO_DT",
    "Expected",
    "NodeProcess",
    "Peer",
    "PeerTopics",
    "Received",
    "SimClock",
    "WIDE_LIMITS",
    "checker_rgb",
    "compressed_image",
    "encode_pixels",
    "expected_for",
    "fixed_frame",
    "fixed_joints",
    "gradient_rgb",
    "joint_state",
    "node_binary",
    "params_yaml",
    "png_bytes",
    "predicted_u8",
    "raw_image",
    "rgb_of",
    "stamp_seconds",
    "time_of",
    "trajectory_arrays",
    "trajectory_error",
    "uniform_rgb",
]
