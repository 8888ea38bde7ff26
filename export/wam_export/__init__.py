"""wam_export: a PyTorch World Action Model -> a wam_policy bundle (wam.yaml + ONNX stages) with
multi-chunk parity fixtures. docs/export_tutorial.md walks through it.

The torch-free parts are importable here (description, manifest, samplers, ONNX Runtime rollout,
fixtures, `wam_policy_node check`); the exporter itself is `wam_export.exporter` (needs torch).
"""

from .check import NodeCheck, find_node, node_check
from .fixtures import ChunkErrors, FixtureChunk, Sequence, read_sequence, replay, write_sequence
from .manifest import read_manifest, write_manifest
from .ort_backend import OrtBackend, open_bundle
from .rollout import Backend, ChunkResult, Rollout, action_positions
from .sampler import integrate, shift_time
from .spec import (
    ActionSpec,
    BundleSpec,
    Camera,
    ContextState,
    Guidance,
    ImageNorm,
    Instruction,
    SamplerSpec,
    SpecError,
    StateSpec,
    StateTensor,
    TensorNames,
    VideoSpec,
)

__all__ = [
    "ActionSpec",
    "Backend",
    "BundleSpec",
    "Camera",
    "ChunkErrors",
    "ChunkResult",
    "ContextState",
    "FixtureChunk",
    "Guidance",
    "ImageNorm",
    "Instruction",
    "NodeCheck",
    "OrtBackend",
    "Rollout",
    "SamplerSpec",
    "Sequence",
    "SpecError",
    "StateSpec",
    "StateTensor",
    "TensorNames",
    "VideoSpec",
    "action_positions",
    "find_node",
    "integrate",
    "node_check",
    "open_bundle",
    "read_manifest",
    "read_sequence",
    "replay",
    "shift_time",
    "write_manifest",
    "write_sequence",
]
