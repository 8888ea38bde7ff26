"""PyTorch modules -> a bundle: ONNX stages, `wam.yaml`, parity fixtures, report, node check. Needs
torch.

The four modules (documented signatures; batch 1, fixed shapes, except the denoise batch with
guidance):

- `encode(frames) -> latents`: frames [1, V, T, 3, H, W] normalized RGB (cameras of different sizes:
  one argument per camera, [1, T, 3, h_v, w_v], in `cameras` order) -> [1, V, T, C, h, w].
- `context(latents, state, tokens, *past, length[, position]) -> tuple`: latents as above, state [1,
  S] normalized, tokens i64 [1, L]; with a context state, the past tensors (in
  `context_state.tensors` order, shapes as declared), `length` i64 [1] (valid positions) and, when
  declared, `position` i64 [1] (chunks since the reset). Returns `spec.context_output_names()` in
  order: `context_outputs`, then the state outputs not among them (each past with the new block
  written at [length, length + B)).
- `denoise(actions, video, time, *context_outputs) -> (action_out, video_out)`: noisy actions [B, H,
  A], noisy video latents [B, V, F, C, h, w], time f32 [B] (B = 1; 2 with batched guidance: cond at
  0), the context outputs -> their velocities dx/dt (`solver: none`: the normalized chunk and
  latents, called once with time 1 and zero inputs).
- `decode(latents) -> frames`: [1, V, F, C, h, w] -> [1, V, F, 3, H, W] RGB in [0, 1] (optional).

`export_bundle` exports each with torch.onnx (TorchScript tracing, opset 17, IR version 10), writes
the manifest (format 1 unless a format-2 feature is used), runs every parity episode through the
whole multi-chunk pipeline in PyTorch and in ONNX Runtime on the same inputs and noise, writes the
fixtures (`wam_export.fixtures`), fails when they disagree beyond the tolerance, and runs
`wam_policy_node check` when the binary is found."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from .check import node_check
from .fixtures import (
    DEFAULT_TOL,
    FixtureChunk,
    Sequence,
    read_sequence,
    replay,
    round_inputs,
    run_chunks,
    write_sequence,
)
from .manifest import write_manifest
from .ort_backend import OrtBackend
from .rollout import Arrays, Rollout
from .spec import BundleSpec

__all__ = [
    "ExportError",
    "ExportReport",
    "ParityEpisode",
    "TorchBackend",
    "WamModules",
    "export_bundle",
    "export_onnx",
]

OPSET = 17
IR_VERSION = 10
# A float16 export is checked against the float32 PyTorch model: float16 keeps 11 significant bits, and
# its rounding goes through every stage, K denoise steps and the carried state.
DEFAULT_TOL_F16 = {"actions": 1e-2, "frames": 2e-2, "video_latents": 3e-2}
F32 = NDArray[np.float32]


class ExportError(RuntimeError):
    pass


@dataclass
class WamModules:
    encode: nn.Module
    context: nn.Module
    denoise: nn.Module
    decode: nn.Module | None = None


@dataclass
class ParityEpisode:
    """One episode for the fixtures: an instruction and, per chunk, the REAL observation window
    (normalized encode inputs: one array [1, V, T, 3, H, W], or one per camera) and joint state
    (physical units). The noise is drawn by the exporter."""

    instruction: str
    frames: list[F32 | list[F32]]
    states: list[NDArray[np.floating]]


@dataclass
class ExportReport:
    bundle: Path
    format_version: int
    parity: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    onnx_bytes: dict[str, int] = field(default_factory=dict)
    node_check: str | None = None
    source_sha256: str | None = None

    def max_errors(self) -> dict[str, float]:
        out = {"actions": 0.0, "video_latents": 0.0, "frames": 0.0}
        for chunks in self.parity.values():
            for c in chunks:
                for k in out:
                    out[k] = max(out[k], c[k])
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "parity_max_abs": self.max_errors(),
            "parity_per_chunk": self.parity,
            "onnx_bytes": self.onnx_bytes,
            "onnx_total_mb": sum(self.onnx_bytes.values()) / 1e6,
            "node_check": self.node_check,
            "source_sha256": self.source_sha256,
        }


def _t(x: NDArray[Any]) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


class TorchBackend:
    """The modules as a rollout backend (float32, no grad)."""

    def __init__(self, spec: BundleSpec, modules: WamModules, batch_guidance: bool) -> None:
        self.spec = spec
        self.m = modules
        self.batch_guidance = batch_guidance
        for mod in (modules.encode, modules.context, modules.denoise, modules.decode):
            if mod is not None:
                mod.eval()

    @torch.no_grad()
    def encode(self, frames: list[F32]) -> F32:
        out: Tensor = self.m.encode(*[_t(f) for f in frames])
        return out.numpy().astype(np.float32)

    @torch.no_grad()
    def context(self, feeds: Arrays) -> Arrays:
        args = [_t(feeds[n]) for n in self.spec.context_input_names()]
        outs = self.m.context(*args)
        if isinstance(outs, Tensor):
            outs = (outs,)
        names = self.spec.context_output_names()
        if len(outs) != len(names):
            raise ExportError(f"context returned {len(outs)} tensors, expected {names}")
        return {n: o.numpy() for n, o in zip(names, outs)}

    @torch.no_grad()
    def denoise(self, feeds: Arrays) -> tuple[F32, F32]:
        args = [_t(feeds[n]) for n in self.spec.denoise_input_names()]
        va, vv = self.m.denoise(*args)
        return va.numpy().astype(np.float32), vv.numpy().astype(np.float32)

    @torch.no_grad()
    def decode(self, latents: F32) -> F32 | None:
        if self.m.decode is None:
            return None
        out = self.m.decode(_t(latents))
        if isinstance(out, Tensor):
            return out.numpy().astype(np.float32)
        # One tensor per camera (cameras of different sizes): camera after camera, flattened.
        return np.concatenate([o.numpy().astype(np.float32).reshape(-1) for o in out])


def _export_one(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_batch: bool = False,
    half: bool = False,
) -> None:
    module.eval()
    dyn = {n: {0: "batch"} for n in [*inputs, *outputs]} if dynamic_batch else None
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamic_axes=dyn,
            dynamo=False,
        )
    m = onnx.load(str(path))
    if half:
        from onnxconverter_common import float16  # only float16 exports need it

        m = float16.convert_float_to_float16(m, keep_io_types=False)
        _retarget_float_casts(m)
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    got_in = [i.name for i in m.graph.input]
    if got_in != inputs:
        raise ExportError(
            f"{path.name}: inputs {got_in} != {inputs} (an input the graph does not use is "
            "optimized away: every declared input must influence an output)"
        )
    got_out = [o.name for o in m.graph.output]
    if got_out != outputs:
        raise ExportError(f"{path.name}: outputs {got_out} != {outputs}")
    onnx.save(m, str(path))


def _retarget_float_casts(m: onnx.ModelProto) -> None:
    """After the float16 conversion: the graph's own Cast-to-float nodes (an integer position made a
    float, say) are declared float16 by the converter but still cast to float; they cast to float16
    now. The casts the converter inserted around float32-only operators are left alone."""
    half = {
        v.name
        for v in [*m.graph.value_info, *m.graph.output]
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in m.graph.node:
        if node.op_type != "Cast" or node.output[0] not in half:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16


def example_context_feeds(spec: BundleSpec) -> Arrays:
    n = spec.names
    feeds: Arrays = {
        n.ctx_latents: np.zeros(spec.latent_shape, np.float32),
        n.state: np.zeros((1, len(spec.state.joints)), np.float32),
        n.tokens: np.zeros((1, spec.instruction.max_tokens), np.int64),
    }
    cs = spec.context_state
    if cs is not None:
        for t in cs.tensors:
            feeds[t.input] = np.zeros(t.shape, np.float32)
        feeds[cs.length] = np.zeros((1,), np.int64)
        if cs.position is not None:
            feeds[cs.position] = np.zeros((1,), np.int64)
    return feeds


def export_onnx(modules: WamModules, spec: BundleSpec, out: Path) -> None:
    """Exports the four stages into `out` (fixed shapes; denoise batch-dynamic with batched
    guidance). For `spec.dtype` float16 each float32 graph is then converted to float16, inputs and
    outputs included (onnxconverter-common; operators without float16 support keep float32 behind
    casts)."""
    spec.validate()
    if spec.dtype not in ("float32", "float16"):
        raise ExportError(f"dtype {spec.dtype!r}: the exporter writes float32 or float16 stages")
    if spec.decode != (modules.decode is not None):
        raise ExportError("spec.decode and the decode module disagree")
    half = spec.dtype == "float16"
    out.mkdir(parents=True, exist_ok=True)
    n = spec.names
    frames = tuple(torch.zeros(s) for s in spec.frame_shapes())
    _export_one(
        modules.encode,
        frames,
        out / spec.files["encode"],
        spec.encode_input_names(),
        [n.latents],
        half=half,
    )
    feeds = example_context_feeds(spec)
    cin = spec.context_input_names()
    _export_one(
        modules.context,
        tuple(_t(feeds[k]) for k in cin),
        out / spec.files["context"],
        cin,
        spec.context_output_names(),
        half=half,
    )
    ctx = TorchBackend(spec, modules, False).context(feeds)
    dn_args = (
        torch.zeros(spec.actions_shape),
        torch.zeros(spec.video_shape),
        torch.zeros(1),
        *[_t(ctx[k]) for k in spec.context_outputs],
    )
    batched = spec.sampler.guidance is not None and spec.guidance_batch
    _export_one(
        modules.denoise,
        dn_args,
        out / spec.files["denoise"],
        spec.denoise_input_names(),
        [n.action_out, n.video_out],
        dynamic_batch=batched,
        half=half,
    )
    if modules.decode is not None:
        _export_one(
            modules.decode,
            (torch.zeros(spec.video_shape),),
            out / spec.files["decode"],
            [n.decode_in],
            spec.decode_output_names(),
            half=half,
        )


def _episode_chunks(
    spec: BundleSpec,
    ep: ParityEpisode,
    rng: np.random.Generator,
    frames_decimals: int | None = None,
) -> list[FixtureChunk]:
    tokens = np.asarray(spec.instruction.tokenize(ep.instruction), np.int64)
    if len(ep.frames) != len(ep.states):
        raise ExportError("a parity episode needs one state per observation window")
    chunks = []
    for k, (fr, st) in enumerate(zip(ep.frames, ep.states)):
        frames = fr if isinstance(fr, list) else [fr]
        shapes = spec.frame_shapes()
        frames = [np.asarray(f, np.float32).reshape(s) for f, s in zip(frames, shapes)]
        na = rng.standard_normal(spec.actions_shape).astype(np.float32)
        nv = rng.standard_normal(spec.video_shape).astype(np.float32)
        c = FixtureChunk(frames, np.asarray(st, np.float64), tokens, na, nv, reset=k == 0)
        chunks.append(round_inputs(c, frames_decimals))
    return chunks


def export_bundle(
    modules: WamModules,
    spec: BundleSpec,
    out: Path,
    episodes: Seq[ParityEpisode],
    *,
    seed: int = 0,
    header: Seq[str] = (),
    source: str | None = None,
    tolerance: dict[str, float] | None = None,
    node: Path | str | None = None,
    require_node_check: bool = False,
    manifest_extra: Seq[str] | None = None,
    fixture_decimals: dict[str, int] | None = None,
) -> ExportReport:
    """Exports, writes the manifest and the fixtures, checks parity (raises `ExportError` beyond the
    tolerance, default actions 1e-4, video latents and frames 1e-3; for `spec.dtype` float16 the ONNX
    stages are float16 and are checked against the float32 modules within `DEFAULT_TOL_F16`) and the
    node's `check`.
    `source`: the exporting script's text, whose SHA-256 the report records (the tutorial's test
    compares it with the tutorial). `manifest_extra`: lines appended to the manifest (default: an
    existing manifest's `monitor:` section is kept). `fixture_decimals`: smaller fixtures, e.g.
    `{"frames": 2, "frames_out": 4}` (input frames rounded before they are run, decoded frames
    written rounded; see `wam_export.fixtures`)."""
    out = Path(out)
    tol = dict(DEFAULT_TOL_F16 if spec.dtype == "float16" else DEFAULT_TOL, **(tolerance or {}))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.onnx"):
        old.unlink()
    export_onnx(modules, spec, out)
    write_manifest(spec, out, header, extra=manifest_extra)
    pdir = out / "parity"
    if pdir.exists():
        shutil.rmtree(pdir)
    report = ExportReport(bundle=out, format_version=spec.format_version)
    batched = spec.sampler.guidance is not None and spec.guidance_batch
    torch_run = Rollout(spec, TorchBackend(spec, modules, batched))
    ort_run = Rollout(spec, OrtBackend(out, spec))
    if spec.sampler.guidance is not None and ort_run.backend.batch_guidance != batched:
        raise ExportError("the exported denoise stage's batch dimension is not what was asked")
    for i, ep in enumerate(episodes):
        rng = np.random.default_rng(seed + i)
        decimals = dict(fixture_decimals or {})
        chunks = _episode_chunks(spec, ep, rng, decimals.get("frames"))
        for c, r in zip(chunks, run_chunks(torch_run, chunks)):
            c.length, c.position = r.length, r.position
            c.actions, c.video_latents, c.frames_out = r.actions, r.video_latents, r.frames_out
        seq = Sequence(
            model_id=spec.model_id,
            chunks=chunks,
            instruction=ep.instruction,
            solver=spec.sampler.solver,
            steps=spec.sampler.steps,
            format_version=spec.format_version,
            tolerance=tol,
            decimals=decimals,
        )
        path = pdir / f"seq_{i}.json"
        write_sequence(path, seq)
        errs = replay(ort_run, read_sequence(path, spec))
        report.parity[path.name] = [
            {"actions": e.actions, "video_latents": e.video_latents, "frames": e.frames}
            for e in errs
        ]
        bad = [k for k, e in enumerate(errs) if not e.within(tol)]
        if bad:
            raise ExportError(
                f"{path}: ONNX Runtime disagrees with torch in chunks {bad}: "
                f"{[errs[k] for k in bad]} (tolerance {tol})"
            )
    report.onnx_bytes = {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}
    if source is not None:
        report.source_sha256 = hashlib.sha256(source.encode()).hexdigest()
    chk = node_check(out, node)
    if chk is not None:
        report.node_check = (
            f"{'ok' if chk.ok else 'FAILED'}: {chk.output.splitlines()[-1] if chk.output else ''}"
        )
        if require_node_check and not chk.ok:
            raise ExportError(f"{chk.binary} check {out} failed:\n{chk.output}")
    elif require_node_check:
        raise ExportError("no wam_policy_node binary (pass node= or set $WAM_NODE)")
    (out / "export_report.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return report
