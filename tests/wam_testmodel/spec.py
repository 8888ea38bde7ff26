"""Constants of the `wam_test_v1` test bundle (see docs/bundle_format.md).

Every other module of the package reads its dimensions and normalization statistics from here,
so the ONNX graphs, the numpy reference and the written `wam.yaml` cannot drift apart.
"""

from __future__ import annotations

from typing import Final

FORMAT_VERSION: Final = 1
MODEL_ID: Final = "wam_test_v1"
# The faulty variant (write_bundle(..., nan_on_unknown_word=True)): NaN actions for an instruction
# whose first word is unknown.
NAN_ON_UNKNOWN_WORD_MODEL_ID: Final = "wam_test_v1_nan_on_unknown_word"

CAMERAS: Final[tuple[str, ...]] = ("exterior", "wrist")
HEIGHT: Final = 32
WIDTH: Final = 32
V: Final = len(CAMERAS)
T: Final = 2  # context frames per camera, oldest first

IMAGE_MEAN: Final[tuple[float, ...]] = (0.5, 0.5, 0.5)
IMAGE_STD: Final[tuple[float, ...]] = (0.5, 0.5, 0.5)

JOINTS: Final[tuple[str, ...]] = (
    "joint1",
    "joint2",
    "joint3",
    "joint4",
    "joint5",
    "joint6",
    "gripper",
)
S: Final = len(JOINTS)
STATE_MEAN: Final[tuple[float, ...]] = (0.1,) * S
STATE_STD: Final[tuple[float, ...]] = (2.0,) * S

A: Final = len(JOINTS)
H: Final = 8  # action horizon
ACTION_DT: Final = 0.1
ACTION_MEAN: Final[tuple[float, ...]] = (0.0,) * A
ACTION_STD: Final[tuple[float, ...]] = (0.5,) * A

F: Final = 2  # predicted video frames per camera
POOL: Final = 4  # latent = POOL x POOL average pool of the normalized frame
C: Final = 3
LATENT_H: Final = HEIGHT // POOL
LATENT_W: Final = WIDTH // POOL

SAMPLER_STEPS: Final = 4  # K

VOCAB_FILE: Final = "vocab.txt"
L: Final = 8  # max_tokens
PAD_ID: Final = 0
UNK_ID: Final = 1

# Coefficients of the test function (physical units, see reference.expected_actions).
BRIGHTNESS_GAIN: Final = 0.02  # per step, times (b_0 - b_1)
TOKEN_GAIN: Final = 0.001  # per step, times the sum of the token ids
JOINT_GAIN: Final = 0.001  # per step, times the joint index j
FRAME_STEP: Final = 0.05  # predicted frame f adds FRAME_STEP * (f + 1) to every pixel

# Tensor names of the four stages.
ENCODE_IN: Final = "frames"
ENCODE_OUT: Final = "latents"
CONTEXT_IN_LATENTS: Final = "latents"
CONTEXT_IN_STATE: Final = "state"
CONTEXT_IN_TOKENS: Final = "tokens"
CONTEXT_OUT_ACTION: Final = "action_target"
CONTEXT_OUT_VIDEO: Final = "video_target"
DENOISE_IN_ACTIONS: Final = "noisy_actions"
DENOISE_IN_VIDEO: Final = "noisy_video"
DENOISE_IN_TIME: Final = "time"
DENOISE_OUT_ACTIONS: Final = "action_velocity"
DENOISE_OUT_VIDEO: Final = "video_velocity"
DECODE_IN: Final = "video_latents"
DECODE_OUT: Final = "predicted_frames"

STAGE_FILES: Final[dict[str, str]] = {
    "encode": "encode.onnx",
    "context": "context.onnx",
    "denoise": "denoise.onnx",
    "decode": "decode.onnx",
}

# ONNX serialization: ONNX Runtime 1.31 rejects the IR version recent `onnx` writes by default.
IR_VERSION: Final = 10
OPSET: Final = 17

# Shapes of every stage tensor (batch 1, all dims fixed).
FRAMES_SHAPE: Final = (1, V, T, 3, HEIGHT, WIDTH)
LATENTS_SHAPE: Final = (1, V, T, C, LATENT_H, LATENT_W)
STATE_SHAPE: Final = (1, S)
TOKENS_SHAPE: Final = (1, L)
ACTIONS_SHAPE: Final = (1, H, A)
VIDEO_SHAPE: Final = (1, V, F, C, LATENT_H, LATENT_W)
TIME_SHAPE: Final = (1,)
PREDICTED_FRAMES_SHAPE: Final = (1, V, F, 3, HEIGHT, WIDTH)
