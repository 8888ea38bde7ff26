"""Multi-chunk parity fixtures: what the export's PyTorch rollout computed, chunk by chunk, with the
state carried between chunks, so that any runtime can be checked against it. No torch.

A fixture is `parity/seq_<i>.json` next to `wam.yaml`:

```
{
  "fixture": "wam_parity_sequence", "version": 1,
  "model_id": str, "format_version": int, "solver": str, "steps": int,
  "instruction": str,                  # informational; the tokens below are what is fed
  "tolerance": {"actions": 1e-4, "frames": 1e-3, "video_latents": 1e-3},
  "chunks": [                          # consecutive chunks of one episode, in order
    {
      "reset": bool,                   # clear the carried state first (true for chunk 0)
      "frames": [...],                 # encode inputs, normalized RGB, flat: [V, T, 3, H, W]
                                       # (per-camera sizes: each camera's [T, 3, h, w] in turn)
      "state": [...],                  # [S] joint positions, physical units (state.joints order)
      "tokens": [...],                 # [L] instruction ids
      "noise_actions": [...],          # [H, A] initial noise, normalized space
      "noise_video": [...],            # [V, F, C, h, w] initial noise
      "length": int, "position": int,  # the state's valid positions / chunk index the context saw
      "actions": [...],                # [H, A] out: out * std + mean (before action.kind)
      "video_latents": [...],          # [V, F, C, h, w] out: the sampler's result
      "frames_out": [...]              # [V, F, 3, H, W] out: decoded (empty without a decode stage)
    }, ...
  ]
}
```

Every float is written with 9 significant digits, which round-trips float32 exactly: a runtime
reading the fixture feeds the very inputs the export fed. The frames fed after the first chunk are
real frames (observed ones, never the predicted ones), as the node feeds them.

Smaller fixtures (`Sequence.decimals`, e.g. `{"frames": 2, "frames_out": 4}`, recorded in the file
as `"decimals"`): the input frames are rounded to that many decimals BEFORE the export runs them
(so the fixture still holds exactly what was fed), and the decoded frames are written rounded (the
rounding, at most half a unit of the last decimal, counts against the frames' tolerance)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .rollout import ChunkResult, Rollout
from .spec import BundleSpec

__all__ = [
    "ChunkErrors",
    "FixtureChunk",
    "Sequence",
    "load_sequence",
    "read_sequence",
    "replay",
    "write_sequence",
]

FIXTURE_KIND = "wam_parity_sequence"
DEFAULT_TOL = {"actions": 1e-4, "frames": 1e-3, "video_latents": 1e-3}


def flat(x: Any, decimals: int | None = None) -> list[float]:
    """Floats as the fixture writes them: 9 significant digits (exact for float32), or rounded to
    `decimals` decimals."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if decimals is not None:
        return [float(f"{v:.{decimals}f}") for v in a]
    return [float(f"{v:.9g}") for v in a]


@dataclass
class FixtureChunk:
    frames: list[NDArray[np.float32]]  # encode inputs with their shapes
    state: NDArray[np.float64]
    tokens: NDArray[np.int64]
    noise_actions: NDArray[np.float32]
    noise_video: NDArray[np.float32]
    reset: bool = False
    length: int = 0
    position: int = 0
    actions: NDArray[np.float64] | None = None
    video_latents: NDArray[np.float32] | None = None
    frames_out: NDArray[np.float32] | None = None


@dataclass
class Sequence:
    model_id: str
    chunks: list[FixtureChunk]
    instruction: str = ""
    solver: str = "euler"
    steps: int = 1
    format_version: int = 1
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOL))
    #: optional rounding of "frames" (inputs) and "frames_out" to that many decimals
    decimals: dict[str, int] = field(default_factory=dict)


def _frames_from_flat(spec: BundleSpec, values: list[float]) -> list[NDArray[np.float32]]:
    a = np.asarray(values, dtype=np.float32)
    out, off = [], 0
    for shape in spec.frame_shapes():
        size = int(np.prod(shape))
        out.append(a[off : off + size].reshape(shape))
        off += size
    if off != a.size:
        raise ValueError(f"frames: {a.size} values, the bundle's encode inputs hold {off}")
    return out


def round_inputs(c: FixtureChunk, frames_decimals: int | None = None) -> FixtureChunk:
    """The chunk's inputs as the fixture stores them (9 digits: exact for float32; the frames
    rounded to `frames_decimals` decimals when given)."""

    def r32(x: NDArray[Any], decimals: int | None = None) -> NDArray[np.float32]:
        return np.asarray(flat(x, decimals), dtype=np.float32).reshape(np.shape(x))

    return FixtureChunk(
        frames=[r32(f, frames_decimals) for f in c.frames],
        state=np.asarray(flat(c.state), dtype=np.float64),
        tokens=np.asarray(c.tokens, dtype=np.int64).reshape(-1),
        noise_actions=r32(c.noise_actions),
        noise_video=r32(c.noise_video),
        reset=c.reset,
    )


def write_sequence(path: Path, seq: Sequence) -> None:
    chunks = []
    for c in seq.chunks:
        chunks.append(
            {
                "reset": bool(c.reset),
                "frames": [v for f in c.frames for v in flat(f, seq.decimals.get("frames"))],
                "state": flat(c.state),
                "tokens": [int(t) for t in np.asarray(c.tokens).reshape(-1)],
                "noise_actions": flat(c.noise_actions),
                "noise_video": flat(c.noise_video),
                "length": int(c.length),
                "position": int(c.position),
                "actions": flat(c.actions) if c.actions is not None else [],
                "video_latents": flat(c.video_latents) if c.video_latents is not None else [],
                "frames_out": (
                    flat(c.frames_out, seq.decimals.get("frames_out"))
                    if c.frames_out is not None
                    else []
                ),
            }
        )
    doc = {
        "fixture": FIXTURE_KIND,
        "version": 1,
        "model_id": seq.model_id,
        "format_version": seq.format_version,
        "solver": seq.solver,
        "steps": seq.steps,
        "instruction": seq.instruction,
        "tolerance": seq.tolerance,
        **({"decimals": seq.decimals} if seq.decimals else {}),
        "chunks": chunks,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))


def read_sequence(path: Path, spec: BundleSpec) -> Sequence:
    """A fixture (this format, or format 1's single-chunk `case_<i>.json`) with arrays shaped for
    `spec`."""
    d = json.loads(Path(path).read_text())
    if d.get("fixture") != FIXTURE_KIND:  # format 1's single case
        d = {
            "model_id": spec.model_id,
            "steps": d["steps"],
            "instruction": d.get("instruction", ""),
            "chunks": [dict(d, reset=True, video_latents=[], length=0, position=0)],
        }
    chunks = []
    for c in d["chunks"]:
        chunks.append(
            FixtureChunk(
                frames=_frames_from_flat(spec, c["frames"]),
                state=np.asarray(c["state"], dtype=np.float64),
                tokens=np.asarray(c["tokens"], dtype=np.int64),
                noise_actions=np.asarray(c["noise_actions"], np.float32).reshape(
                    spec.actions_shape
                ),
                noise_video=np.asarray(c["noise_video"], np.float32).reshape(spec.video_shape),
                reset=bool(c.get("reset", False)),
                length=int(c.get("length", 0)),
                position=int(c.get("position", 0)),
                actions=np.asarray(c["actions"], np.float64).reshape(spec.actions_shape[1:]),
                video_latents=(
                    np.asarray(c["video_latents"], np.float32).reshape(spec.video_shape)
                    if c.get("video_latents")
                    else None
                ),
                frames_out=np.asarray(c["frames_out"], np.float32) if c.get("frames_out") else None,
            )
        )
    return Sequence(
        model_id=d["model_id"],
        chunks=chunks,
        instruction=d.get("instruction", ""),
        solver=d.get("solver", "euler"),
        steps=int(d["steps"]),
        format_version=int(d.get("format_version", 1)),
        tolerance=dict(d.get("tolerance", DEFAULT_TOL)),
        decimals={k: int(v) for k, v in d.get("decimals", {}).items()},
    )


def load_sequence(path: Path, spec: BundleSpec) -> Sequence:
    return read_sequence(path, spec)


@dataclass
class ChunkErrors:
    actions: float
    video_latents: float
    frames: float

    def within(self, tol: dict[str, float]) -> bool:
        return (
            self.actions <= tol["actions"]
            and self.video_latents <= tol["video_latents"]
            and self.frames <= tol["frames"]
        )


def _err(a: Any, b: Any) -> float:
    if a is None or b is None:
        return 0.0
    x, y = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"size {x.size} != {y.size}")
    return float(np.abs(x - y).max()) if x.size else 0.0


def compare(expected: FixtureChunk, got: ChunkResult) -> ChunkErrors:
    return ChunkErrors(
        actions=_err(expected.actions, got.actions),
        video_latents=_err(expected.video_latents, got.video_latents),
        frames=_err(expected.frames_out, got.frames_out),
    )


def run_chunks(rollout: Rollout, chunks: list[FixtureChunk]) -> list[ChunkResult]:
    """Feeds the chunks' inputs in order (clearing the state where `reset`)."""
    out = []
    for c in chunks:
        if c.reset:
            rollout.clear_state()
        out.append(rollout.step(c.frames, c.state, c.tokens, c.noise_actions, c.noise_video))
    return out


def replay(rollout: Rollout, seq: Sequence) -> list[ChunkErrors]:
    """Runs a fixture's inputs through `rollout` and returns the per-chunk max abs errors; also
    checks the state's length/position the context saw."""
    errs = []
    for c, r in zip(seq.chunks, run_chunks(rollout, seq.chunks)):
        if (r.length, r.position) != (c.length, c.position):
            raise AssertionError(
                f"state length/position {r.length}/{r.position} != fixture {c.length}/{c.position}"
            )
        errs.append(compare(c, r))
    return errs
