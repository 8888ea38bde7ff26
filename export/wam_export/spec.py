"""What a bundle declares (docs/bundle_format.md, formats 1 and 2): cameras,
state, actions, video, sampler, instruction, stage tensor names and the context state (KV cache). No
torch.

A `BundleSpec` is written to `wam.yaml` by `wam_export.manifest`, read back from one by
`wam_export.manifest.read_manifest`, and drives the rollouts (`wam_export.rollout`) that the parity
fixtures are computed with. `format_version` is 1 unless a format-2 feature is used
(`BundleSpec.format2_features`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SOLVERS = ("euler", "heun", "unipc", "none")
RESIZE = ("squash", "letterbox", "center_crop")
ACTION_KINDS = ("absolute_joint_position", "delta_joint_position", "joint_velocity")
GUIDED = ("video", "actions")
ELEMENT_TYPES = ("float32", "float16")


class SpecError(ValueError):
    """A bundle description the runtime would refuse (the message names the field)."""


@dataclass(frozen=True)
class Camera:
    """One camera, in the order of the V axis. `resize` (format 1 and 2) is how the node fits a
    differently sized image: squash (default) | letterbox | center_crop."""

    name: str
    height: int
    width: int
    resize: str | None = None


@dataclass(frozen=True)
class ImageNorm:
    """Pixels in [0, 1] (RGB) are fed as (pixel - mean) / std."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class StateSpec:
    """Joint state fed to the model: (q - mean) / std, in `joints` order."""

    joints: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class ActionSpec:
    """The action chunk: `horizon` steps of `dt` seconds; q = output * std + mean (then `kind`)."""

    joints: tuple[str, ...]
    horizon: int
    dt: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "absolute_joint_position"


@dataclass(frozen=True)
class VideoSpec:
    """F predicted frames per camera as latents [C, h, w]; `dt` seconds apart (None: spread over the
    chunk)."""

    frames: int
    latent_shape: tuple[int, int, int]
    dt: float | None = None


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance (format 2): out = uncond + scale * (cond - uncond) on `apply_to`;
    the unconditional branch is the context stage run with an empty instruction (all pad ids)."""

    scale: float
    apply_to: tuple[str, ...] = ("video",)


@dataclass(frozen=True)
class SamplerSpec:
    """`steps` intervals K; solver euler | heun | unipc | none; `shift` of the time grid; `order` of
    UniPC (1 or 2, default 2); `guidance` and `reuse` (0-based evaluation indices at which the
    denoise stage is not run and the previous evaluation's outputs are reused) are format 2."""

    steps: int
    solver: str = "euler"
    shift: float = 1.0
    order: int | None = None
    guidance: Guidance | None = None
    reuse: tuple[int, ...] = ()

    @property
    def evaluations(self) -> int:
        if self.solver == "heun":
            return 2 * self.steps - 1
        if self.solver == "none":
            return 1
        return self.steps

    @property
    def unipc_order(self) -> int:
        return 2 if self.order is None else self.order


@dataclass(frozen=True)
class StateTensor:
    """One tensor carried across chunks (format 2): the context stage reads `input` (the past) and
    returns `output` (the past with the new block written at [length, length + B) along the axis).
    `shape` is the fixed shape of both (batch first: 1)."""

    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ContextState:
    """The context stage's carried state (an autoregressive KV cache, format 2). `axis` is the
    position axis of every tensor (its size is the maximum length M), `block` the positions appended
    per chunk (B), `length` the name of the i64 [1] input with the number of valid positions,
    `position` the optional i64 [1] input with the chunks since the last reset."""

    tensors: tuple[StateTensor, ...]
    axis: int
    block: int
    length: str = "past_length"
    position: str | None = None

    @property
    def max_length(self) -> int:
        return self.tensors[0].shape[self.axis]


@dataclass(frozen=True)
class Instruction:
    """The `vocab` tokenizer: whitespace words (ASCII punctuation trimmed, lower case) looked up in
    `vocab` (id = index; unknown words -> unk_id), padded with pad_id / truncated to
    `max_tokens`."""

    vocab: tuple[str, ...]
    max_tokens: int
    pad_id: int = 0
    unk_id: int = 1
    file: str = "vocab.txt"

    def tokenize(self, text: str) -> list[int]:
        ids = {w: i for i, w in enumerate(self.vocab)}
        out = [self.pad_id] * self.max_tokens
        words = [w.strip("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").lower() for w in text.split()]
        for i, w in enumerate([w for w in words if w][: self.max_tokens]):
            out[i] = ids.get(w, self.unk_id)
        return out

    def empty(self) -> list[int]:
        """The unconditional branch's tokens: all pad ids."""
        return [self.pad_id] * self.max_tokens


@dataclass(frozen=True)
class TensorNames:
    """ONNX tensor names of the stages' roles (docs/bundle_format.md, "Stage tensors"). With cameras
    of different sizes the encode stage has one input per camera, `<frames>_<camera name>`."""

    frames: str = "frames"
    latents: str = "latents"
    ctx_latents: str = "latents"
    state: str = "state"
    tokens: str = "tokens"
    actions: str = "noisy_actions"
    video: str = "noisy_video"
    time: str = "time"
    action_out: str = "action_velocity"
    video_out: str = "video_velocity"
    decode_in: str = "video_latents"
    decode_out: str = "predicted_frames"


@dataclass(frozen=True)
class BundleSpec:
    """Everything `wam.yaml` says. `context_outputs` are the context stage's outputs passed to
    denoise by name (in this order after actions, video, time); state outputs not listed there are
    returned by the context stage after them. `guidance_batch`: the denoise stage is exported with a
    dynamic first dimension so that both guidance branches run in one call (batch 2, cond at 0)."""

    model_id: str
    cameras: tuple[Camera, ...]
    context_frames: int
    state: StateSpec
    action: ActionSpec
    video: VideoSpec
    sampler: SamplerSpec
    instruction: Instruction
    context_outputs: tuple[str, ...]
    image: ImageNorm = ImageNorm()
    context_state: ContextState | None = None
    frame_dt: float | None = None
    decode: bool = True
    guidance_batch: bool = True
    dtype: str = "float32"
    names: TensorNames = field(default_factory=TensorNames)
    files: dict[str, str] = field(
        default_factory=lambda: {
            "encode": "encode.onnx",
            "context": "context.onnx",
            "denoise": "denoise.onnx",
            "decode": "decode.onnx",
        }
    )

    # --- derived
    # ------------------------------------------------------------------------------------
    @property
    def per_camera_inputs(self) -> bool:
        """Cameras of different sizes: the encode stage takes one tensor per camera."""
        return len({(c.height, c.width) for c in self.cameras}) > 1

    def encode_input_names(self) -> list[str]:
        if self.per_camera_inputs:
            return [f"{self.names.frames}_{c.name}" for c in self.cameras]
        return [self.names.frames]

    def decode_output_names(self) -> list[str]:
        """The decode stage's frame outputs: one [1, V, F, 3, H, W], or per camera [1, F, 3, h, w]
        (cameras of different sizes)."""
        if self.per_camera_inputs:
            return [f"{self.names.decode_out}_{c.name}" for c in self.cameras]
        return [self.names.decode_out]

    def frame_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the encode inputs: [1, V, T, 3, H, W], or per camera [1, T, 3, h_v, w_v]."""
        t = self.context_frames
        if self.per_camera_inputs:
            return [(1, t, 3, c.height, c.width) for c in self.cameras]
        c0 = self.cameras[0]
        return [(1, len(self.cameras), t, 3, c0.height, c0.width)]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (1, len(self.cameras), self.context_frames, *self.video.latent_shape)

    @property
    def video_shape(self) -> tuple[int, ...]:
        return (1, len(self.cameras), self.video.frames, *self.video.latent_shape)

    @property
    def actions_shape(self) -> tuple[int, ...]:
        return (1, self.action.horizon, len(self.action.joints))

    def context_input_names(self) -> list[str]:
        n = self.names
        names = [n.ctx_latents, n.state, n.tokens]
        if self.context_state is not None:
            cs = self.context_state
            names += [s.input for s in cs.tensors] + [cs.length]
            if cs.position is not None:
                names.append(cs.position)
        return names

    def context_output_names(self) -> list[str]:
        """What the context module returns, in order: `context_outputs`, then the state outputs not
        in it."""
        out = list(self.context_outputs)
        if self.context_state is not None:
            out += [s.output for s in self.context_state.tensors if s.output not in out]
        return out

    def denoise_input_names(self) -> list[str]:
        n = self.names
        return [n.actions, n.video, n.time, *self.context_outputs]

    def format2_features(self) -> list[str]:
        """The format-2 fields this bundle uses (empty: it is written as format 1)."""
        f: list[str] = []
        s = self.sampler
        if s.guidance is not None:
            f.append("sampler.guidance")
        if s.reuse:
            f.append("sampler.reuse")
        if self.context_state is not None:
            f.append("stages.context.state")
        if self.per_camera_inputs:
            f.append("cameras of different sizes")
        if self.dtype == "float16" or (
            self.context_state is not None
            and any(t.dtype == "float16" for t in self.context_state.tensors)
        ):
            f.append("f16 tensors")
        return f

    @property
    def format_version(self) -> int:
        return 2 if self.format2_features() else 1

    def validate(self) -> None:
        """Raises `SpecError` naming the field for what the runtime would refuse."""
        if not self.cameras:
            raise SpecError("cameras: at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise SpecError(f"cameras: duplicate names {names}")
        for c in self.cameras:
            if c.height <= 0 or c.width <= 0:
                raise SpecError(f"cameras.{c.name}: height and width must be > 0")
            if c.resize is not None and c.resize not in RESIZE:
                raise SpecError(f"cameras.{c.name}.resize: {c.resize!r} not one of {RESIZE}")
        if not re.fullmatch(r"[^\n]+", self.model_id):
            raise SpecError("model_id: one line of text")
        if self.context_frames <= 0:
            raise SpecError("context_frames: must be > 0")
        st, ac = self.state, self.action
        if not (len(st.joints) == len(st.mean) == len(st.std)) or not st.joints:
            raise SpecError("state: joints, mean and std need one entry per joint")
        if not (len(ac.joints) == len(ac.mean) == len(ac.std)) or not ac.joints:
            raise SpecError("action: joints, mean and std need one entry per joint")
        if any(s <= 0 for s in (*st.std, *ac.std)):
            raise SpecError("state.std / action.std: every entry must be > 0")
        if ac.kind not in ACTION_KINDS:
            raise SpecError(f"action.kind: {ac.kind!r} not one of {ACTION_KINDS}")
        if ac.kind != "absolute_joint_position" and not set(ac.joints) <= set(st.joints):
            raise SpecError(f"action.kind {ac.kind}: every action joint must be a state joint")
        if ac.horizon <= 0 or not ac.dt > 0:
            raise SpecError("action: horizon and dt must be > 0")
        if self.video.frames <= 0 or len(self.video.latent_shape) != 3:
            raise SpecError("video: frames > 0 and latent_shape [C, h, w]")
        if self.video.dt is not None and not self.video.dt > 0:
            raise SpecError("video.dt: must be > 0")
        if self.frame_dt is not None and not self.frame_dt > 0:
            raise SpecError("frame_dt: must be > 0")
        s = self.sampler
        if s.solver not in SOLVERS:
            raise SpecError(f"sampler.solver: {s.solver!r} not one of {SOLVERS}")
        if s.steps <= 0:
            raise SpecError("sampler.steps: must be > 0")
        if s.solver == "none" and s.steps != 1:
            raise SpecError("sampler.steps: must be 1 with solver none")
        if not (s.shift > 0 and s.shift < float("inf")):
            raise SpecError("sampler.shift: finite and > 0")
        if s.order is not None and (s.solver != "unipc" or s.order not in (1, 2)):
            raise SpecError("sampler.order: 1 or 2, unipc only")
        if s.guidance is not None:
            g = s.guidance
            if not g.scale > 0:
                raise SpecError("sampler.guidance.scale: must be > 0")
            if not g.apply_to or not set(g.apply_to) <= set(GUIDED):
                raise SpecError(f"sampler.guidance.apply_to: a non-empty subset of {GUIDED}")
        for r in s.reuse:
            if r <= 0 or r >= s.evaluations:
                raise SpecError(
                    f"sampler.reuse: index {r} must be in 1..{s.evaluations - 1} "
                    f"({s.evaluations} evaluations)"
                )
        if len(set(s.reuse)) != len(s.reuse):
            raise SpecError("sampler.reuse: duplicate index")
        ins = self.instruction
        if ins.max_tokens <= 0 or not (0 <= ins.pad_id < len(ins.vocab)):
            raise SpecError("instruction: max_tokens > 0 and pad_id inside the vocab")
        if not (0 <= ins.unk_id < len(ins.vocab)):
            raise SpecError("instruction.unk_id: inside the vocab")
        if self.dtype not in ELEMENT_TYPES:
            raise SpecError(f"dtype: {self.dtype!r} not one of {ELEMENT_TYPES}")
        cs = self.context_state
        if cs is not None:
            if not cs.tensors:
                raise SpecError("stages.context.state.tensors: at least one tensor")
            shape = cs.tensors[0].shape
            for t in cs.tensors:
                if len(t.shape) <= cs.axis or cs.axis < 1:
                    raise SpecError(
                        f"stages.context.state.axis: {cs.axis} outside {t.input}'s rank"
                    )
                if t.shape[cs.axis] != shape[cs.axis]:
                    raise SpecError(f"stages.context.state: {t.input} has another maximum length")
                if t.dtype not in ELEMENT_TYPES:
                    raise SpecError(f"stages.context.state.{t.input}: dtype {t.dtype!r}")
                if t.shape[0] != 1:
                    raise SpecError(f"stages.context.state.{t.input}: batch (first dimension) is 1")
            m = cs.max_length
            if not (0 < cs.block <= m and m % cs.block == 0):
                raise SpecError(f"stages.context.state.block: B={cs.block}, M={m}: need M % B == 0")
        if not self.context_outputs:
            raise SpecError("stages.context.outputs: at least one output")
