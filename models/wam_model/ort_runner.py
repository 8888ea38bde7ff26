"""A bundle run with ONNX Runtime and numpy only (no torch): the same pipeline as the Rust node
(encode -> context once -> K Euler steps of denoise -> de-normalize; decode), for export checks, the
parity test and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class BundleRunner:
    def __init__(self, bundle: Path, threads: int = 1) -> None:
        self.dir = Path(bundle)
        self.manifest: dict[str, Any] = yaml.safe_load((self.dir / "wam.yaml").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name, st in self.manifest["stages"].items():
            self.sessions[name] = ort.InferenceSession(
                str(self.dir / st["file"]), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        m = self.manifest
        self.state_mean = np.asarray(m["state"]["mean"], dtype=np.float32)
        self.state_std = np.asarray(m["state"]["std"], dtype=np.float32)
        self.action_mean = np.asarray(m["action"]["mean"], dtype=np.float32)
        self.action_std = np.asarray(m["action"]["std"], dtype=np.float32)

    def stage(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = self.manifest["stages"][name]
        return st

    def encode(self, frames: F32) -> F32:
        st = self.stage("encode")
        out = self.sessions["encode"].run([st["outputs"]["latents"]], {st["inputs"]["frames"]: frames})
        return np.asarray(out[0], dtype=np.float32)

    def context(self, latents: F32, state_norm: F32, tokens: NDArray[np.int64]) -> dict[str, F32]:
        st = self.stage("context")
        names = list(st["outputs"])
        feeds = {
            st["inputs"]["latents"]: latents,
            st["inputs"]["state"]: state_norm,
            st["inputs"]["tokens"]: tokens,
        }
        outs = self.sessions["context"].run(names, feeds)
        return {n: np.asarray(o) for n, o in zip(names, outs)}

    def denoise(self, xa: F32, xv: F32, t: np.float32, cache: dict[str, F32]) -> tuple[F32, F32]:
        st = self.stage("denoise")
        feeds: dict[str, Any] = {
            st["inputs"]["actions"]: xa,
            st["inputs"]["video"]: xv,
            st["inputs"]["time"]: np.array([t], dtype=np.float32),
            **cache,
        }
        va, vv = self.sessions["denoise"].run([st["outputs"]["actions"], st["outputs"]["video"]], feeds)
        return np.asarray(va, dtype=np.float32), np.asarray(vv, dtype=np.float32)

    def decode(self, latents: F32) -> F32 | None:
        if "decode" not in self.sessions:
            return None
        st = self.stage("decode")
        out = self.sessions["decode"].run([st["outputs"]["frames"]], {st["inputs"]["latents"]: latents})
        return np.asarray(out[0], dtype=np.float32)

    def run(
        self,
        frames: F32,
        state_raw: F32,
        tokens: NDArray[np.int64],
        noise_actions: F32,
        noise_video: F32,
        steps: int,
    ) -> tuple[F32, F32, F32 | None]:
        """Returns (de-normalized actions [H, A], final video latents, decoded frames or None)."""
        lat = self.encode(frames.astype(np.float32))
        state = ((state_raw.astype(np.float32) - self.state_mean) / self.state_std).reshape(1, -1)
        cache = self.context(lat, state.astype(np.float32), tokens.reshape(1, -1).astype(np.int64))
        xa = noise_actions.astype(np.float32).copy()
        xv = noise_video.astype(np.float32).copy()
        dt = np.float32(1.0) / np.float32(steps)
        for k in range(steps):
            t = np.float32(k) * dt
            va, vv = self.denoise(xa, xv, t, cache)
            xa = (xa + dt * va).astype(np.float32)
            xv = (xv + dt * vv).astype(np.float32)
        actions = xa[0] * self.action_std + self.action_mean
        return actions.astype(np.float32), xv, self.decode(xv)
