"""The node's per-chunk computation over a sequence of chunks, backend-agnostic (torch modules or
ONNX Runtime sessions behind the `Backend` protocol), as docs/bundle_format.md ("Format 2") describes it:

1. encode the observation window (REAL frames) -> latents;
2. normalize the state, `(q - mean) / std` in f32;
3. context with the carried state (past_* with `length` valid positions, `position` = chunks since
   the reset); with guidance a second context run with the empty instruction and its own carried
   state;
4. integrate the flow (`wam_export.sampler`) from the given noise; each evaluation runs denoise on
   the conditional branch (and the unconditional one: batched as batch 2, cond at 0, when the
   denoise stage's first dimension is dynamic; else two runs) and combines `uncond + scale (cond -
   uncond)` on the guided outputs; `reuse` skips evaluations. `solver: none`: one run at t = 1 from
   zeros;
5. de-normalize the actions (`out * std + mean`, what the runtime returns; the node then applies
   `action.kind`), decode the video latents;
6. accept the chunk when its outputs are finite: past_* <- present_*, length += B, position += 1,
   and when length + B > M slide (drop the oldest B positions along the axis, zero the tail, length
   -= B).

No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .sampler import integrate
from .spec import BundleSpec

F32 = NDArray[np.float32]
Arrays = dict[str, NDArray[np.generic]]

__all__ = ["Backend", "ChunkResult", "Rollout", "action_positions"]


class Backend(Protocol):
    """One model's four stages on numpy arrays (f32, tokens and lengths i64)."""

    #: denoise takes both guidance branches as batch 2 in one run
    batch_guidance: bool

    def encode(self, frames: list[F32]) -> F32: ...

    def context(self, feeds: Arrays) -> Arrays:
        """Every context output (`BundleSpec.context_output_names`) by name."""
        ...

    def denoise(self, feeds: Arrays) -> tuple[F32, F32]: ...

    def decode(self, latents: F32) -> F32 | None: ...


@dataclass
class ChunkResult:
    actions: NDArray[np.float64]  # [H, A] de-normalized (before action.kind)
    actions_norm: F32  # [1, H, A]
    video_latents: F32  # [1, V, F, C, h, w]
    frames_out: (
        F32 | None
    )  # [1, V, F, 3, H, W]; cameras of different sizes: flat, camera after camera
    latents: F32  # encode output
    length: int  # valid state positions the context saw
    position: int


class _Branch:
    """One guidance branch's carried state."""

    def __init__(self, spec: BundleSpec) -> None:
        self.spec = spec
        self.past: dict[str, NDArray[np.generic]] = {}
        self.clear()

    def clear(self) -> None:
        cs = self.spec.context_state
        if cs is None:
            return
        self.past = {
            t.input: np.zeros(t.shape, dtype=np.float16 if t.dtype == "float16" else np.float32)
            for t in cs.tensors
        }


def _slide(x: NDArray[np.generic], axis: int, block: int) -> NDArray[np.generic]:
    y = np.roll(x, -block, axis=axis)
    idx = [slice(None)] * y.ndim
    idx[axis] = slice(y.shape[axis] - block, None)
    y[tuple(idx)] = 0
    return y


class Rollout:
    """A sequence of chunks with the state carried between them (`clear_state` = the node's
    reset)."""

    def __init__(self, spec: BundleSpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        self.state_mean = np.asarray(spec.state.mean, dtype=np.float32)
        self.state_std = np.asarray(spec.state.std, dtype=np.float32)
        self.action_mean = np.asarray(spec.action.mean, dtype=np.float32)
        self.action_std = np.asarray(spec.action.std, dtype=np.float32)
        self.branches = [_Branch(spec)]
        if spec.sampler.guidance is not None:
            self.branches.append(_Branch(spec))
        self.length = 0
        self.position = 0

    def clear_state(self) -> None:
        for b in self.branches:
            b.clear()
        self.length = 0
        self.position = 0

    def _context(
        self, branch: _Branch, latents: F32, state: F32, tokens: NDArray[np.int64]
    ) -> Arrays:
        s = self.spec
        n = s.names
        feeds: Arrays = {n.ctx_latents: latents, n.state: state, n.tokens: tokens}
        cs = s.context_state
        if cs is not None:
            feeds.update(branch.past)
            feeds[cs.length] = np.array([self.length], dtype=np.int64)
            if cs.position is not None:
                feeds[cs.position] = np.array([self.position], dtype=np.int64)
        return self.backend.context(feeds)

    def step(
        self,
        frames: list[F32],
        state_raw: NDArray[np.floating],
        tokens: NDArray[np.int64] | list[int],
        noise_actions: F32,
        noise_video: F32,
    ) -> ChunkResult:
        """One chunk. `frames`: the encode inputs (normalized RGB; one array, or one per camera)."""
        s = self.spec
        n = s.names
        latents = np.asarray(
            self.backend.encode([np.asarray(f, np.float32) for f in frames]), np.float32
        )
        q = np.asarray(state_raw, dtype=np.float64).reshape(-1).astype(np.float32)
        state = ((q - self.state_mean) / self.state_std).astype(np.float32).reshape(1, -1)
        tok = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        outs = [self._context(self.branches[0], latents, state, tok)]
        g = s.sampler.guidance
        if g is not None:
            empty = np.asarray(s.instruction.empty(), dtype=np.int64).reshape(1, -1)
            outs.append(self._context(self.branches[1], latents, state, empty))
        ctx_feeds = [{k: o[k] for k in s.context_outputs} for o in outs]

        def run(xa: F32, xv: F32, t: np.float32, ctx: Arrays, batch: int) -> tuple[F32, F32]:
            feeds: Arrays = {
                n.actions: xa,
                n.video: xv,
                n.time: np.full((batch,), t, dtype=np.float32),
                **ctx,
            }
            return self.backend.denoise(feeds)

        def field(t: np.float32, xa: F32, xv: F32) -> tuple[F32, F32]:
            if g is None:
                return run(xa, xv, t, ctx_feeds[0], 1)
            if self.backend.batch_guidance:
                both = {k: np.concatenate([ctx_feeds[0][k], ctx_feeds[1][k]]) for k in ctx_feeds[0]}
                va2, vv2 = run(np.concatenate([xa, xa]), np.concatenate([xv, xv]), t, both, 2)
                (ca, ua), (cv, uv) = (va2[:1], va2[1:]), (vv2[:1], vv2[1:])
            else:
                ca, cv = run(xa, xv, t, ctx_feeds[0], 1)
                ua, uv = run(xa, xv, t, ctx_feeds[1], 1)
            scale = np.float32(g.scale)
            va = (ua + scale * (ca - ua)).astype(np.float32) if "actions" in g.apply_to else ca
            vv = (uv + scale * (cv - uv)).astype(np.float32) if "video" in g.apply_to else cv
            return va, vv

        na = np.asarray(noise_actions, np.float32).reshape(s.actions_shape)
        nv = np.asarray(noise_video, np.float32).reshape(s.video_shape)
        if s.sampler.solver == "none":
            xa, xv = field(np.float32(1.0), np.zeros_like(na), np.zeros_like(nv))
        else:
            xa, xv = integrate(s.sampler, field, na, nv)
        actions = (xa[0] * self.action_std + self.action_mean).astype(np.float32).astype(np.float64)
        frames_out = self.backend.decode(xv) if s.decode else None
        result = ChunkResult(
            actions=actions,
            actions_norm=xa,
            video_latents=xv,
            frames_out=frames_out,
            latents=latents,
            length=self.length,
            position=self.position,
        )
        if np.isfinite(xa).all() and np.isfinite(xv).all():
            self._accept(outs)
        return result

    def _accept(self, outs: list[Arrays]) -> None:
        cs = self.spec.context_state
        if cs is None:
            return
        for branch, o in zip(self.branches, outs):
            branch.past = {t.input: np.array(o[t.output], copy=True) for t in cs.tensors}
        self.length += cs.block
        self.position += 1
        if self.length + cs.block > cs.max_length:
            for branch in self.branches:
                branch.past = {k: _slide(v, cs.axis, cs.block) for k, v in branch.past.items()}
            self.length -= cs.block


def action_positions(
    spec: BundleSpec, actions: NDArray[np.float64], state_raw: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Joint positions [H, A] of a de-normalized chunk per `action.kind` (the node's ActionSpace):
    absolute as is; delta q_i = q_obs + a_i; velocity q_i = q_{i-1} + a_i dt, q_{-1} = q_obs."""
    kind = spec.action.kind
    if kind == "absolute_joint_position":
        return actions
    idx = [spec.state.joints.index(j) for j in spec.action.joints]
    q_obs = np.asarray(state_raw, dtype=np.float64)[idx]
    if kind == "delta_joint_position":
        return q_obs[None, :] + actions
    return q_obs[None, :] + np.cumsum(actions * spec.action.dt, axis=0)
