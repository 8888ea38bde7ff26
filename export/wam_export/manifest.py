"""`wam.yaml` from a `BundleSpec` (format 1 when no format-2 feature is used, else 2) and back. No
torch.

Numbers are written as the shortest decimal (6 significant digits when those suffice) that reads
back as the same float32, so the runtime (which parses f32) and the rollouts (`np.float32(value)`)
normalize with identical numbers. An existing manifest's `monitor:` section (the simulator-measured
calibration) is kept when the manifest is rewritten."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .spec import (
    ActionSpec,
    BundleSpec,
    Camera,
    ContextState,
    Guidance,
    ImageNorm,
    Instruction,
    SamplerSpec,
    StateSpec,
    StateTensor,
    TensorNames,
    VideoSpec,
)

__all__ = [
    "CALIBRATION_COMMENT",
    "f32_text",
    "manifest_lines",
    "monitor_section",
    "monitor_span",
    "read_manifest",
    "write_manifest",
]

CALIBRATION_COMMENT = "# Monitor calibration"


def f32_text(x: float) -> str:
    """The shortest of 6..9 significant digits that reads back as the same float32."""
    v = np.float32(x)
    for digits in range(6, 10):
        s = f"{float(v):.{digits}g}"
        if np.float32(float(s)) == v:
            return s
    return repr(float(v))


def _floats(xs: Sequence[float]) -> str:
    return "[" + ", ".join(f32_text(x) for x in xs) + "]"


def _seconds(x: float) -> str:
    return repr(float(x))


def monitor_span(lines: Sequence[str]) -> tuple[int, int] | None:
    """Lines [k, j) of a manifest's top-level `monitor:` section with the calibration comment lines
    right above it, if it has one."""
    for i, line in enumerate(lines):
        if re.match(r"monitor\s*:", line):
            j = i + 1
            while j < len(lines) and lines[j][:1] in (" ", "\t"):
                j += 1
            k = i
            while k > 0 and lines[k - 1].startswith(CALIBRATION_COMMENT):
                k -= 1
            return k, j
    return None


def monitor_section(manifest: Path) -> list[str]:
    """An existing manifest's top-level `monitor:` section (with the calibration comment lines right
    above it), verbatim; empty when there is none."""
    if not manifest.exists():
        return []
    lines = manifest.read_text().splitlines()
    span = monitor_span(lines)
    return [] if span is None else lines[span[0] : span[1]]


def manifest_lines(spec: BundleSpec, header: Sequence[str] = ()) -> list[str]:
    spec.validate()
    n = spec.names
    lines = [f"# {h}" if not h.startswith("#") else h for h in header]
    lines.append(f"format_version: {spec.format_version}")
    lines.append(f"model_id: {spec.model_id}")
    if spec.frame_dt is not None:
        lines.append(f"frame_dt: {_seconds(spec.frame_dt)}")
    lines.append("cameras:")
    for c in spec.cameras:
        extra = f", resize: {c.resize}" if c.resize is not None else ""
        lines.append(f"  - {{name: {c.name}, height: {c.height}, width: {c.width}{extra}}}")
    lines += [
        f"context_frames: {spec.context_frames}",
        "image:",
        f"  mean: {_floats(spec.image.mean)}",
        f"  std: {_floats(spec.image.std)}",
        "state:",
        f"  joints: [{', '.join(spec.state.joints)}]",
        f"  mean: {_floats(spec.state.mean)}",
        f"  std: {_floats(spec.state.std)}",
        "action:",
        f"  kind: {spec.action.kind}",
        f"  joints: [{', '.join(spec.action.joints)}]",
        f"  horizon: {spec.action.horizon}",
        f"  dt: {_seconds(spec.action.dt)}",
        f"  mean: {_floats(spec.action.mean)}",
        f"  std: {_floats(spec.action.std)}",
        "video:",
        f"  frames: {spec.video.frames}",
    ]
    if spec.video.dt is not None:
        lines.append(f"  dt: {_seconds(spec.video.dt)}")
    lines.append(f"  latent_shape: [{', '.join(str(d) for d in spec.video.latent_shape)}]")
    s = spec.sampler
    lines += ["sampler:", f"  steps: {s.steps}"]
    if s.solver != "euler":
        lines.append(f"  solver: {s.solver}")
    if s.shift != 1.0:
        lines.append(f"  shift: {_seconds(s.shift)}")
    if s.order is not None:
        lines.append(f"  order: {s.order}")
    if s.guidance is not None:
        lines += [
            "  guidance:",
            f"    scale: {_seconds(s.guidance.scale)}",
            f"    apply_to: [{', '.join(s.guidance.apply_to)}]",
        ]
    if s.reuse:
        lines.append(f"  reuse: [{', '.join(str(r) for r in s.reuse)}]")
    ins = spec.instruction
    lines += [
        "instruction:",
        "  tokenizer: vocab",
        f"  file: {ins.file}",
        f"  max_tokens: {ins.max_tokens}",
        f"  pad_id: {ins.pad_id}",
        f"  unk_id: {ins.unk_id}",
        "stages:",
        "  encode:",
        f"    file: {spec.files['encode']}",
    ]
    lines.append(f"    inputs: {{frames: {_frames_value(spec, spec.encode_input_names())}}}")
    lines += [
        f"    outputs: {{latents: {n.latents}}}",
        "  context:",
        f"    file: {spec.files['context']}",
        f"    inputs: {{latents: {n.ctx_latents}, state: {n.state}, tokens: {n.tokens}}}",
        f"    outputs: [{', '.join(spec.context_outputs)}]",
    ]
    cs = spec.context_state
    if cs is not None:
        lines += ["    state:", "      tensors:"]
        lines += [f"        - {{input: {t.input}, output: {t.output}}}" for t in cs.tensors]
        lines += [
            f"      axis: {cs.axis}",
            f"      block: {cs.block}",
            f"      length: {cs.length}",
        ]
        if cs.position is not None:
            lines.append(f"      position: {cs.position}")
    lines += [
        "  denoise:",
        f"    file: {spec.files['denoise']}",
        f"    inputs: {{actions: {n.actions}, video: {n.video}, time: {n.time}}}",
        f"    outputs: {{actions: {n.action_out}, video: {n.video_out}}}",
    ]
    if spec.decode:
        lines += [
            "  decode:",
            f"    file: {spec.files['decode']}",
            f"    inputs: {{latents: {n.decode_in}}}",
        ]
        lines.append(f"    outputs: {{frames: {_frames_value(spec, spec.decode_output_names())}}}")
    return lines


def write_manifest(
    spec: BundleSpec,
    bundle: Path,
    header: Sequence[str] = (),
    keep_monitor: bool = True,
    extra: Sequence[str] | None = None,
) -> Path:
    """Writes `bundle/wam.yaml` and the vocab file; returns the manifest's path. `extra`: lines
    appended verbatim (instead of the kept `monitor:` section when given)."""
    bundle.mkdir(parents=True, exist_ok=True)
    path = bundle / "wam.yaml"
    lines = manifest_lines(spec, header)
    if extra is not None:
        lines += list(extra)
    elif keep_monitor:
        lines += monitor_section(path)
    path.write_text("\n".join(lines) + "\n")
    (bundle / spec.instruction.file).write_text("\n".join(spec.instruction.vocab) + "\n")
    return path


def _t(xs: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


def _frames_value(spec: BundleSpec, names: Sequence[str]) -> str:
    """A frames role's value: the tensor's name, or {camera: name, ...} for cameras of different
    sizes."""
    if not spec.per_camera_inputs:
        return names[0]
    return "{" + ", ".join(f"{c.name}: {name}" for c, name in zip(spec.cameras, names)) + "}"


def _frames_base(field: str, value: str | dict[str, str], cams: Sequence[Camera]) -> str:
    """A frames tensor name, or the common base of per-camera names `<base>_<camera>` (the names the
    kit writes; other per-camera names are refused)."""
    if isinstance(value, str):
        return value
    first = value.get(cams[0].name, "")
    base = first.removesuffix(f"_{cams[0].name}")
    want = {c.name: f"{base}_{c.name}" for c in cams}
    if dict(value) != want or base == first:
        raise ValueError(f"{field}: per-camera names must be <base>_<camera> ({want}), got {value}")
    return base


def read_manifest(
    bundle: Path, state_shapes: dict[str, tuple[int, ...]] | None = None
) -> BundleSpec:
    """A bundle's manifest as a `BundleSpec` (the rollouts' view of it). State tensor shapes are not
    in the manifest: pass them, or they are read from the context stage's ONNX file."""
    m: dict[str, Any] = yaml.safe_load((bundle / "wam.yaml").read_text())
    st = m["stages"]
    enc_in = st["encode"]["inputs"]["frames"]
    cams = tuple(
        Camera(c["name"], int(c["height"]), int(c["width"]), c.get("resize")) for c in m["cameras"]
    )
    frames_name = _frames_base("stages.encode.inputs.frames", enc_in, cams)
    dec_out = st["decode"]["outputs"]["frames"] if "decode" in st else "predicted_frames"
    names = TensorNames(
        frames=frames_name,
        latents=st["encode"]["outputs"]["latents"],
        ctx_latents=st["context"]["inputs"]["latents"],
        state=st["context"]["inputs"]["state"],
        tokens=st["context"]["inputs"]["tokens"],
        actions=st["denoise"]["inputs"]["actions"],
        video=st["denoise"]["inputs"]["video"],
        time=st["denoise"]["inputs"]["time"],
        action_out=st["denoise"]["outputs"]["actions"],
        video_out=st["denoise"]["outputs"]["video"],
        decode_in=st["decode"]["inputs"]["latents"] if "decode" in st else "video_latents",
        decode_out=_frames_base("stages.decode.outputs.frames", dec_out, cams),
    )
    files = {k: v["file"] for k, v in st.items()}
    cs = None
    if "state" in st["context"]:
        sd = st["context"]["state"]
        if state_shapes is None:
            state_shapes = _onnx_input_shapes(bundle / files["context"])
        dts = _onnx_input_types(bundle / files["context"])
        cs = ContextState(
            tensors=tuple(
                StateTensor(
                    t["input"],
                    t["output"],
                    tuple(state_shapes[t["input"]]),
                    dts.get(t["input"], "float32"),
                )
                for t in sd["tensors"]
            ),
            axis=int(sd["axis"]),
            block=int(sd["block"]),
            length=sd["length"],
            position=sd.get("position"),
        )
    s = m["sampler"]
    g = s.get("guidance")
    ins = m["instruction"]
    vocab = tuple((bundle / ins["file"]).read_text().split("\n"))
    if vocab and vocab[-1] == "":
        vocab = vocab[:-1]
    video = m["video"]
    spec = BundleSpec(
        model_id=str(m["model_id"]),
        cameras=cams,
        context_frames=int(m["context_frames"]),
        image=ImageNorm(_t(m["image"]["mean"]), _t(m["image"]["std"])),  # type: ignore[arg-type]
        state=StateSpec(tuple(m["state"]["joints"]), _t(m["state"]["mean"]), _t(m["state"]["std"])),
        action=ActionSpec(
            joints=tuple(m["action"]["joints"]),
            horizon=int(m["action"]["horizon"]),
            dt=float(m["action"]["dt"]),
            mean=_t(m["action"]["mean"]),
            std=_t(m["action"]["std"]),
            kind=m["action"].get("kind", "absolute_joint_position"),
        ),
        video=VideoSpec(
            int(video["frames"]),
            tuple(int(d) for d in video["latent_shape"]),  # type: ignore[arg-type]
            float(video["dt"]) if "dt" in video else None,
        ),
        sampler=SamplerSpec(
            steps=int(s["steps"]),
            solver=s.get("solver", "euler"),
            shift=float(s.get("shift", 1.0)),
            order=int(s["order"]) if "order" in s else None,
            guidance=Guidance(float(g["scale"]), tuple(g["apply_to"])) if g else None,
            reuse=tuple(int(r) for r in s.get("reuse", [])),
        ),
        instruction=Instruction(
            vocab, int(ins["max_tokens"]), int(ins["pad_id"]), int(ins["unk_id"]), ins["file"]
        ),
        context_outputs=tuple(st["context"]["outputs"]),
        context_state=cs,
        frame_dt=float(m["frame_dt"]) if "frame_dt" in m else None,
        decode="decode" in st,
        names=names,
        files=files,
    )
    return spec


def _onnx_inputs(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.input)


def _onnx_input_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {
        i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in _onnx_inputs(path)
    }


def _onnx_input_types(path: Path) -> dict[str, str]:
    import onnx

    return {
        i.name: "float16" if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "float32"
        for i in _onnx_inputs(path)
    }
