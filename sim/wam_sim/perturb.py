"""Perturbations of a running episode: the world or a sensor stops matching what a policy expects.

They exist to measure a failure monitor (does the WAM's predicted future notice that the world is not
doing what it imagined?), so each one is a real change of the simulated physics or of the rendered
images, applied at a chosen simulated time, never a flag a policy could read:

- ``cube_moved``: the instructed cube is teleported to another free spot on the table;
- ``cube_removed``: the instructed cube leaves the scene (out of reach, not rendered);
- ``arm_blocked``: the arm's joints are braked and held where they are, whatever is commanded;
- ``arm_pushed``: a short horizontal force on the hand knocks the arm aside once;
- ``camera_frozen``: one camera keeps delivering its last image (new stamps, same pixels);
- ``camera_occluded``: a centred box over half of one camera's image is black;
- ``camera_shifted``: one camera is moved a few cm and turned a few degrees (a bumped mount).

`SimEnv` applies the physical ones (and the camera shift) when its simulated time crosses the
perturbation's time; `FrameFilter` applies the image ones to rendered frames, so the in-process
env and the ROS node's camera thread share the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import CAMERA_NAMES

KINDS: tuple[str, ...] = (
    "cube_moved",
    "cube_removed",
    "arm_blocked",
    "arm_pushed",
    "camera_frozen",
    "camera_occluded",
    "camera_shifted",
)
# Kinds applied to rendered frames (the physics does not change).
IMAGE_KINDS: frozenset[str] = frozenset({"camera_frozen", "camera_occluded"})
# Kinds that act on one camera (named by Perturbation.camera).
CAMERA_KINDS: frozenset[str] = IMAGE_KINDS | {"camera_shifted"}

# cube_moved: the new spot lies at least this far (horizontally) from the old one, metres.
CUBE_MOVE_MIN_M = 0.10
# arm_pushed: force on the hand (N) for this long (s): ~6 cm of fingertip displacement at its peak,
# about a firm shove; the position servos bring the arm back within ~1 s.
PUSH_FORCE_N = 250.0
PUSH_DURATION_S = 0.15
# camera_shifted: translation (m) and rotation (rad) of the camera, in random directions.
CAMERA_SHIFT_M = 0.03
CAMERA_TILT_RAD = float(np.deg2rad(4.0))
# camera_occluded: fraction of the image's area that is black (a centred box of the image's shape).
OCCLUDED_AREA = 0.5


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of an episode: ``kind`` (see KINDS) at ``time_s`` simulated seconds after
    the episode starts; ``camera`` names the camera for the camera kinds ("" for the others)."""

    kind: str
    time_s: float
    camera: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation {self.kind!r}; known: {list(KINDS)}")
        if not (np.isfinite(self.time_s) and self.time_s >= 0.0):
            raise ValueError(f"perturbation time {self.time_s!r} must be finite and >= 0")
        if self.kind in CAMERA_KINDS:
            if self.camera not in CAMERA_NAMES:
                raise ValueError(
                    f"perturbation {self.kind} needs a camera out of {CAMERA_NAMES}, "
                    f"got {self.camera!r}"
                )
        elif self.camera:
            # The camera of a non-camera kind means nothing: dropped so that equal perturbations
            # compare equal however they were written.
            object.__setattr__(self, "camera", "")

    @staticmethod
    def parse(kind: str, time_s: float, camera: str) -> Perturbation | None:
        """The perturbation the sim node's parameters name (None for kind ""); ValueError if bad."""
        if not kind:
            return None
        return Perturbation(kind, float(time_s), camera if kind in CAMERA_KINDS else "")

    def describe(self) -> str:
        """E.g. "camera_frozen (wrist) at 1.50 s"."""
        cam = f" ({self.camera})" if self.camera else ""
        return f"{self.kind}{cam} at {self.time_s:.2f} s"


@dataclass(frozen=True)
class ImageEffect:
    """What the frames rendered from one state must show: the image perturbation active in that
    state ("" for none) and the episode it belongs to (a new episode forgets frozen images)."""

    episode: int
    kind: str = ""
    camera: str = ""


def occlusion_box(height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the black box of camera_occluded: centred, the image's aspect ratio,
    OCCLUDED_AREA of its area (a hand or a sticker over the middle of the lens)."""
    scale = float(np.sqrt(OCCLUDED_AREA))
    # Margins equal on both sides (centred to the pixel): the box's area is OCCLUDED_AREA within
    # a row and a column.
    top, left = round(height * (1 - scale) / 2), round(width * (1 - scale) / 2)
    return slice(top, height - top), slice(left, width - left)


class FrameFilter:
    """Applies the image perturbations to rendered frames, in render order.

    It remembers each camera's last delivered frame, because a frozen camera keeps delivering the
    frame it showed before it froze, not the first one rendered after.
    """

    def __init__(self) -> None:
        self._episode = -1
        self._last: dict[str, np.ndarray] = {}
        self._frozen: np.ndarray | None = None

    def apply(self, frames: dict[str, np.ndarray], effect: ImageEffect) -> dict[str, np.ndarray]:
        """The frames to deliver for ``frames`` rendered from a state with ``effect``."""
        if effect.episode != self._episode:
            self._episode, self._last, self._frozen = effect.episode, {}, None
        out = dict(frames)
        cam = effect.camera
        if effect.kind == "camera_frozen" and cam in out:
            if self._frozen is None:
                self._frozen = self._last.get(cam, out[cam]).copy()
            out[cam] = self._frozen.copy()
        elif effect.kind == "camera_occluded" and cam in out:
            img = out[cam].copy()
            rows, cols = occlusion_box(img.shape[0], img.shape[1])
            img[rows, cols] = 0
            out[cam] = img
        self._last = {c: img for c, img in out.items()}
        return out


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit vector ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A direction drawn uniformly on the sphere."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)
