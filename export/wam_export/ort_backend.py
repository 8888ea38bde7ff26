"""A bundle's stages in ONNX Runtime (CPU) as a rollout `Backend`. No torch.

Inputs are cast to the element type each session declares (f16 stages get f16, as the runtime
converts at the boundary); outputs come back as f32 (i64 stays i64). The denoise stage batches both
guidance branches when every one of its inputs and outputs has a dynamic (or 2) first dimension, the
runtime's rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from .manifest import read_manifest
from .rollout import Arrays, Rollout
from .spec import BundleSpec

F32 = NDArray[np.float32]

__all__ = ["OrtBackend", "open_bundle"]

_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def _batchable(sess: ort.InferenceSession) -> bool:
    def ok(shape: list[Any]) -> bool:
        return bool(shape) and (not isinstance(shape[0], int) or shape[0] == 2)

    return all(ok(list(v.shape)) for v in [*sess.get_inputs(), *sess.get_outputs()])


class OrtBackend:
    def __init__(self, bundle: Path, spec: BundleSpec, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.spec = spec
        self.sessions: dict[str, ort.InferenceSession] = {}
        for stage, file in spec.files.items():
            if stage == "decode" and not spec.decode:
                continue
            self.sessions[stage] = ort.InferenceSession(
                str(Path(bundle) / file), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        self.batch_guidance = _batchable(self.sessions["denoise"])

    def _run(self, stage: str, outputs: list[str], feeds: dict[str, Any]) -> list[NDArray[Any]]:
        sess = self.sessions[stage]
        types = {i.name: _TYPES.get(i.type, np.float32) for i in sess.get_inputs()}
        cast = {
            k: np.asarray(v).astype(types[k], copy=False) for k, v in feeds.items() if k in types
        }
        outs = sess.run(outputs, cast)
        return [o.astype(np.float32) if o.dtype == np.float16 else np.asarray(o) for o in outs]

    def encode(self, frames: list[F32]) -> F32:
        names = self.spec.encode_input_names()
        (lat,) = self._run("encode", [self.spec.names.latents], dict(zip(names, frames)))
        return np.asarray(lat, np.float32)

    def context(self, feeds: Arrays) -> Arrays:
        names = self.spec.context_output_names()
        return dict(zip(names, self._run("context", names, dict(feeds))))

    def denoise(self, feeds: Arrays) -> tuple[F32, F32]:
        n = self.spec.names
        va, vv = self._run("denoise", [n.action_out, n.video_out], dict(feeds))
        return np.asarray(va, np.float32), np.asarray(vv, np.float32)

    def decode(self, latents: F32) -> F32 | None:
        if "decode" not in self.sessions:
            return None
        n = self.spec.names
        outs = self._run("decode", self.spec.decode_output_names(), {n.decode_in: latents})
        if len(outs) == 1:
            return np.asarray(outs[0], np.float32)
        # One output per camera (cameras of different sizes): camera after camera, flattened.
        return np.concatenate([np.asarray(o, np.float32).reshape(-1) for o in outs])


def open_bundle(bundle: Path, threads: int = 1) -> Rollout:
    """A rollout of a bundle on disk through ONNX Runtime."""
    spec = read_manifest(Path(bundle))
    return Rollout(spec, OrtBackend(Path(bundle), spec, threads))
