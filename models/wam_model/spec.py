"""The fixed interface shared with the simulator and the Rust runtime, and the model's sizes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
DATA_DIR = Path(os.environ.get("WAM_DATA_DIR", str(MODELS / ".data")))
BUNDLE_DIR = MODELS / "wam_sim"
BASELINE_DIR = MODELS / "wam_sim_action_only"
TRAINING_DIR = BUNDLE_DIR / "training"

CAMERAS: tuple[str, ...] = ("exterior", "wrist")
JOINTS: tuple[str, ...] = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")
INSTRUCTIONS: tuple[str, ...] = (
    "touch the red cube",
    "touch the green cube",
    "touch the blue cube",
    "push the red cube to the yellow zone",
    "push the green cube to the yellow zone",
    "push the blue cube to the yellow zone",
)
IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
PAD_ID = 0
UNK_ID = 1


def vocab() -> list[str]:
    """Vocab file lines: id = line index; <pad> = 0, <unk> = 1, then the instruction words sorted."""
    words = sorted({w for s in INSTRUCTIONS for w in s.split()})
    return ["<pad>", "<unk>", *words]


def tokenize(text: str, max_tokens: int) -> list[int]:
    """Same rule as the Rust `vocab` tokenizer: whitespace words, ASCII punctuation trimmed, lower case."""
    ids = {w: i for i, w in enumerate(vocab())}
    out = [PAD_ID] * max_tokens
    words = [w.strip("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").lower() for w in text.split()]
    words = [w for w in words if w]
    for i, w in enumerate(words[:max_tokens]):
        out[i] = ids.get(w, UNK_ID)
    return out


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the data and of the networks (all stages have batch 1 and these fixed shapes)."""

    image_size: int = 64
    context_frames: int = 2  # T, consecutive camera frames (1/15 s apart)
    camera_rate_hz: float = 15.0
    horizon: int = 16  # H
    action_dt: float = 0.1
    video_frames: int = 2  # F
    video_dt: float = 0.8  # seconds between predicted frames (frame f at stamp + (f+1) * video_dt)
    latent_channels: int = 8  # C
    latent_size: int = 8  # h = w
    max_tokens: int = 8  # L
    sampler_steps: int = 2  # K (offline action error is lowest at small K: see models/README.md)
    width: int = 128  # transformer width D
    heads: int = 4
    context_layers: int = 2
    denoise_layers: int = 4
    mlp_ratio: int = 4
    patch: int = 4  # latent patch size of the predicted-video tokens (4 tokens per frame)
    # Latent patch size of the context-image tokens (16 tokens per frame): finer than the video tokens
    # because the actions need the cubes' positions (4 pixels wide at 64x64); the context runs once per chunk.
    context_patch: int = 2
    cameras: tuple[str, ...] = field(default=CAMERAS)
    joints: tuple[str, ...] = field(default=JOINTS)

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    @property
    def action_dim(self) -> int:
        return len(self.joints)

    @property
    def state_dim(self) -> int:
        return len(self.joints)

    @property
    def vocab_size(self) -> int:
        return len(vocab())

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        d["joints"] = list(self.joints)
        return d

    @staticmethod
    def from_dict(d: dict[str, object]) -> ModelSpec:
        kw = dict(d)
        kw["cameras"] = tuple(kw["cameras"])  # type: ignore[arg-type]
        kw["joints"] = tuple(kw["joints"])  # type: ignore[arg-type]
        return ModelSpec(**kw)  # type: ignore[arg-type]
