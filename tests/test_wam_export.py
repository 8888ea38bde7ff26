"""The torch-free parts of the export kit (export/wam_export): samplers against the independent
reference, manifest writer/reader against the committed bundles and the runtime's rules (the node's
`check` when its binary is present), the carried state's semantics, and the committed multi-chunk
parity fixtures re-run in ONNX Runtime. No torch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from wam_export import (
    BundleSpec,
    ContextState,
    Guidance,
    Rollout,
    SamplerSpec,
    SpecError,
    StateTensor,
    action_positions,
    integrate,
    node_check,
    open_bundle,
    read_manifest,
    read_sequence,
    replay,
    write_manifest,
)
from wam_export.fixtures import FixtureChunk, run_chunks
from wam_export.manifest import f32_text, manifest_lines

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
REFERENCE = REPO / "tests" / "fixtures" / "sampler_reference.json"
KIT_BUNDLES = ["wam_sim_dz", "wam_sim_act", "wam_tutorial"]


# --- samplers
# ---------------------------------------------------------------------------------------
def _reference_cases() -> list[dict]:
    d = json.loads(REFERENCE.read_text())
    return [c for c in d["cases"] if c["inpaint"] is None]


def _case_id(c: dict) -> str:
    g = c["guidance"]
    extra = f"-cfg{g['scale']}{'+'.join(g['apply_to'])}" if g else ""
    extra += f"-reuse{'_'.join(map(str, c['reuse']))}" if c["reuse"] else ""
    return f"{c['solver']}{c['order'] or ''}-{c['steps']}-{c['shift']}{extra}"


@pytest.mark.parametrize("case", _reference_cases(), ids=_case_id)
def test_sampler_matches_reference(case: dict) -> None:
    """The kit's sampler against tests/sampler_reference.py's fixture, guidance (the fixture's second
    field as the unconditional branch, combined as the rollout does) and reuse included."""
    d = json.loads(REFERENCE.read_text())
    n = d["n_actions"]
    seen: list[float] = []

    def tanh_field(name: str, t: np.float32, xa: np.ndarray, xv: np.ndarray) -> np.ndarray:
        a, b = np.asarray(d[name]["A"]), np.asarray(d[name]["b"])
        x = np.concatenate([xa.reshape(-1), xv.reshape(-1)]).astype(np.float64)
        return np.tanh(a @ x + b * float(t)).astype(np.float32)

    g = case["guidance"]

    def field(t: np.float32, xa: np.ndarray, xv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(float(t))
        v = tanh_field("field", t, xa, xv)
        if g is not None:
            u = tanh_field("field_uncond", t, xa, xv)
            scale = np.float32(g["scale"])
            guided = (u + scale * (v - u)).astype(np.float32)
            v = np.concatenate(
                [
                    guided[:n] if "actions" in g["apply_to"] else v[:n],
                    guided[n:] if "video" in g["apply_to"] else v[n:],
                ]
            )
        return v[:n], v[n:]

    x0 = np.asarray(d["x0"], np.float32)
    spec = SamplerSpec(
        case["steps"],
        case["solver"],
        case["shift"],
        case["order"],
        reuse=tuple(case["reuse"] or ()),
    )
    xa, xv = integrate(spec, field, x0[:n], x0[n:])
    got = np.concatenate([xa, xv])
    assert np.abs(got - np.asarray(case["final"])).max() < 2e-5
    assert np.allclose(seen, [e["t"] for e in case["evals"]], atol=1e-7)


def test_reuse_skips_evaluations() -> None:
    calls: list[float] = []

    def field(t: np.float32, xa: np.ndarray, xv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(float(t))
        return -xa, -xv

    x = np.ones(3, np.float32)
    integrate(SamplerSpec(6, "unipc", 5.0, 2, reuse=(2, 4)), field, x, x)
    assert len(calls) == 4


# --- manifest
# ---------------------------------------------------------------------------------------
def test_f32_text_round_trips() -> None:
    for v in [0.212161, -0.00187311, 1e-6, 3.0, 0.1, np.float32(0.1) * 3]:
        assert np.float32(float(f32_text(v))) == np.float32(v)
    assert f32_text(0.5) == "0.5"


def test_writer_reproduces_the_trained_bundle_manifest(tmp_path: Path) -> None:
    """wam_model.export writes models/wam_sim/wam.yaml through the kit: the same text."""
    src = MODELS / "wam_sim"
    spec = read_manifest(src)
    assert spec.format_version == 1
    header = [ln for ln in (src / "wam.yaml").read_text().splitlines() if ln.startswith("#")][:2]
    shutil.copy(src / "wam.yaml", tmp_path / "wam.yaml")  # its monitor section is kept
    write_manifest(spec, tmp_path, header)
    assert (tmp_path / "wam.yaml").read_text() == (src / "wam.yaml").read_text()
    assert (tmp_path / "vocab.txt").read_text() == (src / "vocab.txt").read_text()


@pytest.mark.parametrize("name", KIT_BUNDLES)
def test_committed_kit_manifests_are_current(name: str) -> None:
    bundle = MODELS / name
    spec = read_manifest(bundle)
    text = (bundle / "wam.yaml").read_text()
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert "\n".join(manifest_lines(spec, header)) + "\n" == text
    assert read_manifest(bundle) == spec


def _dz() -> BundleSpec:
    return read_manifest(MODELS / "wam_sim_dz")


def test_format_version_follows_the_features() -> None:
    dz = _dz()
    assert dz.format_version == 2
    assert set(dz.format2_features()) == {
        "sampler.guidance",
        "sampler.reuse",
        "stages.context.state",
    }
    plain = dataclasses.replace(
        dz, sampler=SamplerSpec(4), context_state=None, context_outputs=("cond", "kv_bias")
    )
    assert plain.format_version == 1
    assert read_manifest(MODELS / "wam_sim_act").format_version == 1  # solver none: (1,2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda s: dataclasses.replace(s, sampler=dataclasses.replace(s.sampler, reuse=(0,))),
            "reuse",
        ),
        (
            lambda s: dataclasses.replace(s, sampler=dataclasses.replace(s.sampler, reuse=(8,))),
            "reuse",
        ),
        (
            lambda s: dataclasses.replace(
                s, sampler=dataclasses.replace(s.sampler, guidance=Guidance(0.0))
            ),
            "guidance.scale",
        ),
        (
            lambda s: dataclasses.replace(
                s, sampler=dataclasses.replace(s.sampler, guidance=Guidance(2.0, ()))
            ),
            "apply_to",
        ),
        (lambda s: dataclasses.replace(s, sampler=SamplerSpec(2, "none")), "steps"),
        (
            lambda s: dataclasses.replace(
                s, context_state=dataclasses.replace(s.context_state, block=20)
            ),
            "block",
        ),
        (
            lambda s: dataclasses.replace(s, action=dataclasses.replace(s.action, kind="torque")),
            "action.kind",
        ),
    ],
)
def test_validate_names_the_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match=field):
        change(_dz()).validate()


def test_node_check_accepts_written_bundles(tmp_path: Path) -> None:
    """The node's own check on a bundle whose manifest the kit wrote (skipped without the
    binary)."""
    src = MODELS / "wam_sim"
    dst = tmp_path / "b"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("parity", "eval", "training"))
    write_manifest(read_manifest(src), dst, ["written by test_wam_export"])
    r = node_check(dst)
    if r is None:
        pytest.skip("no wam_policy_node binary (set $WAM_NODE or build)")
    assert r.ok, r.output
    for name in ("wam_sim_dz", "wam_sim_act"):
        r = node_check(MODELS / name)
        assert r is not None
        old = ("format_version", "unknown field", "unknown variant")
        if not r.ok and any(w in r.output for w in old):
            pytest.skip(f"{r.binary} predates bundle format 2: {r.output.splitlines()[-1]}")
        assert r.ok, r.output


# --- carried state
# ----------------------------------------------------------------------------------
class _CountingBackend:
    """Context writes the chunk index + 1 into the block; denoise returns zeros."""

    batch_guidance = False

    def __init__(self, spec: BundleSpec) -> None:
        self.spec = spec
        self.seen: list[np.ndarray] = []

    def encode(self, frames: list[np.ndarray]) -> np.ndarray:
        return np.zeros(self.spec.latent_shape, np.float32)

    def context(self, feeds: dict) -> dict:
        cs = self.spec.context_state
        assert cs is not None
        past = feeds["past"]
        self.seen.append(past.copy())
        n = int(feeds[cs.length][0])
        present = past.copy()
        present[:, n : n + cs.block] = float(feeds[cs.position][0] + 1)
        return {"present": present, "cond": np.zeros((1, 1), np.float32)}

    def denoise(self, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.spec.actions_shape, np.float32), np.zeros(
            self.spec.video_shape, np.float32
        )

    def decode(self, latents: np.ndarray) -> None:
        return None


def test_state_carries_and_slides() -> None:
    spec = dataclasses.replace(
        _dz(),
        sampler=SamplerSpec(2),
        context_outputs=("cond",),
        context_state=ContextState(
            (StateTensor("past", "present", (1, 6)),), axis=1, block=2, position="chunk_index"
        ),
        decode=False,
    )
    be = _CountingBackend(spec)
    r = Rollout(spec, be)
    c = FixtureChunk(
        frames=[np.zeros(s, np.float32) for s in spec.frame_shapes()],
        state=np.zeros(7),
        tokens=np.zeros(8, np.int64),
        noise_actions=np.zeros(spec.actions_shape, np.float32),
        noise_video=np.zeros(spec.video_shape, np.float32),
    )
    res = run_chunks(r, [dataclasses.replace(c, reset=True)] + [c] * 4)
    assert [(x.length, x.position) for x in res] == [(0, 0), (2, 1), (4, 2), (4, 3), (4, 4)]
    assert be.seen[1].tolist() == [[1, 1, 0, 0, 0, 0]]
    assert be.seen[2].tolist() == [[1, 1, 2, 2, 0, 0]]
    assert be.seen[3].tolist() == [[2, 2, 3, 3, 0, 0]]  # slid: the oldest block dropped
    assert be.seen[4].tolist() == [[3, 3, 4, 4, 0, 0]]
    r.clear_state()
    r.step(c.frames, c.state, c.tokens, c.noise_actions, c.noise_video)
    assert be.seen[5].tolist() == [[0] * 6]


def test_action_kinds() -> None:
    spec = _dz()
    a = np.ones((16, 7))
    q = np.arange(7.0)
    assert np.array_equal(action_positions(spec, a, q), a)
    d = dataclasses.replace(
        spec, action=dataclasses.replace(spec.action, kind="delta_joint_position")
    )
    assert np.array_equal(action_positions(d, a, q)[3], q + 1)
    v = dataclasses.replace(spec, action=dataclasses.replace(spec.action, kind="joint_velocity"))
    assert np.allclose(action_positions(v, a, q)[3], q + 4 * spec.action.dt)


# --- parity fixtures through ONNX Runtime
# -----------------------------------------------------------
PARITY = [
    (b, p)
    for b in ["wam_sim", "wam_sim_action_only", *KIT_BUNDLES]
    for p in sorted((MODELS / b / "parity").glob("*.json"))
]


@pytest.mark.parametrize(("bundle", "path"), PARITY, ids=lambda x: getattr(x, "name", x))
def test_parity_fixtures_replay_in_onnx_runtime(bundle: str, path: Path) -> None:
    r = open_bundle(MODELS / bundle)
    seq = read_sequence(path, r.spec)
    errs = replay(r, seq)
    for k, e in enumerate(errs):
        assert e.within(seq.tolerance), f"chunk {k}: {e}"


def test_dz_fixture_is_a_closed_loop_episode() -> None:
    """>= 5 consecutive chunks, the cache slides, the frames change between chunks."""
    r = open_bundle(MODELS / "wam_sim_dz")
    seq = read_sequence(MODELS / "wam_sim_dz" / "parity" / "seq_0.json", r.spec)
    assert len(seq.chunks) >= 5 and seq.chunks[0].reset and not any(c.reset for c in seq.chunks[1:])
    cs = r.spec.context_state
    assert cs is not None
    assert max(c.length for c in seq.chunks) + cs.block == cs.max_length
    assert [c.position for c in seq.chunks] == list(range(len(seq.chunks)))
    for a, b in zip(seq.chunks, seq.chunks[1:]):
        assert not np.array_equal(a.frames[0], b.frames[0])


def test_cameras_of_different_sizes() -> None:
    """models/wam_test_mixed (tests/wam_testmodel/mixed.py): the kit reads its per-camera frame
    tensors, writes them back the same way, and its ONNX Runtime rollout feeds each camera's encode
    input and returns each camera's decoded frames at its own size, camera after camera."""
    bundle = REPO / "models" / "wam_test_mixed"
    rollout = open_bundle(bundle)
    spec = rollout.spec
    assert spec.per_camera_inputs and spec.format_version == 2
    assert spec.encode_input_names() == ["frames_exterior", "frames_wrist"]
    assert spec.decode_output_names() == ["frames_exterior", "frames_wrist"]
    assert spec.frame_shapes() == [(1, 1, 3, 8, 8), (1, 1, 3, 4, 6)]
    text = "\n".join(manifest_lines(spec))
    assert "inputs: {frames: {exterior: frames_exterior, wrist: frames_wrist}}" in text
    assert "outputs: {frames: {exterior: frames_exterior, wrist: frames_wrist}}" in text
    x = (0.3, 0.8)
    frames = [np.full(s, v, np.float32) for s, v in zip(spec.frame_shapes(), x)]
    rng = np.random.default_rng(0)
    r = rollout.step(
        frames,
        np.array([0.2, 0.4]),
        [2, 4, 0, 0],
        rng.standard_normal(spec.actions_shape).astype(np.float32),
        rng.standard_normal(spec.video_shape).astype(np.float32),
    )
    assert r.frames_out is not None
    per_frame = [3 * 8 * 8, 3 * 4 * 6]
    f = spec.video.frames
    ext, wrist = np.split(r.frames_out, [f * per_frame[0]])
    assert wrist.size == f * per_frame[1]
    assert np.allclose(ext, x[0], atol=1e-5) and np.allclose(wrist, x[1], atol=1e-5)
    assert np.allclose(r.actions, (x[0] + x[1]) / 2 + 0.3, atol=1e-5)


def test_per_camera_names_follow_the_kit_convention(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(REPO / "models" / "wam_test_mixed", bundle)
    m = (bundle / "wam.yaml").read_text()
    (bundle / "wam.yaml").write_text(
        m.replace(
            "wrist: frames_wrist}}\n    outputs: {latents",
            "wrist: wrist_in}}\n    outputs: {latents",
        )
    )
    with pytest.raises(ValueError, match=r"stages.encode.inputs.frames: per-camera names"):
        read_manifest(bundle)


def test_export_with_cameras_of_different_sizes(tmp_path: Path) -> None:
    """With torch (`make test-export`): a small model whose cameras have different sizes is exported
    with one encode input and one decode output per camera, and its ONNX stages agree with PyTorch
    over two chunks (export_bundle raises otherwise)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from wam_export import ActionSpec, Camera, Instruction, StateSpec, VideoSpec
    from wam_export.exporter import ParityEpisode, WamModules, export_bundle

    sizes = ((8, 8), (4, 6))
    latent = (1, 1, 1, 2, 2, 2)  # [1, 1 camera, T, C, h, w]

    class Encode(nn.Module):
        def forward(self, ext: torch.Tensor, wrist: torch.Tensor) -> torch.Tensor:
            parts = [x.mean(dim=(2, 3, 4)).reshape(1, 1, 1, 1, 1, 1) for x in (ext, wrist)]
            return torch.cat([p.expand(*latent) for p in parts], dim=1)

    class Context(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(
            self, latents: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            video = latents.mean(dim=(2, 3, 4, 5), keepdim=True).expand(1, 2, 1, 2, 2, 2)
            act = self.lin(state) + latents.mean() + 0.01 * tokens.float().mean()
            return act.reshape(1, 1, 2).expand(1, 4, 2), video

    class Denoise(nn.Module):
        def forward(
            self,
            xa: torch.Tensor,
            xv: torch.Tensor,
            t: torch.Tensor,
            action_target: torch.Tensor,
            video_target: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return (action_target - xa) / (1 - t), (video_target - xv) / (1 - t)

    class Decode(nn.Module):
        def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
            m = v.mean(dim=(3, 4, 5))  # [1, V, F]
            return tuple(
                m[:, i].reshape(1, 1, 1, 1, 1).expand(1, 1, 3, h, w)
                for i, (h, w) in enumerate(sizes)
            )

    joints = ("a", "b")
    spec = BundleSpec(
        model_id="mixed_export_v1",
        cameras=(Camera("ext", *sizes[0]), Camera("wrist", *sizes[1])),
        context_frames=1,
        state=StateSpec(joints, mean=(0.0, 0.0), std=(1.0, 1.0)),
        action=ActionSpec(joints, horizon=4, dt=0.1, mean=(0.0, 0.0), std=(1.0, 1.0)),
        video=VideoSpec(frames=1, latent_shape=(2, 2, 2), dt=0.4),
        sampler=SamplerSpec(steps=2),
        instruction=Instruction(vocab=("<pad>", "<unk>", "pick"), max_tokens=4),
        context_outputs=("action_target", "video_target"),
    )
    assert spec.format_version == 2 and "cameras of different sizes" in spec.format2_features()
    frames = [
        [
            np.full((1, 1, 3, *sizes[0]), 0.1 * k, np.float32),
            np.full((1, 1, 3, *sizes[1]), 0.5, np.float32),
        ]
        for k in range(2)
    ]
    episode = ParityEpisode("pick", frames=frames, states=[np.zeros(2), np.ones(2)])
    out = tmp_path / "bundle"
    torch.manual_seed(0)
    export_bundle(
        WamModules(Encode(), Context(), Denoise(), Decode()), spec, out, [episode], node=None
    )
    text = (out / "wam.yaml").read_text()
    assert "inputs: {frames: {ext: frames_ext, wrist: frames_wrist}}" in text
    assert "outputs: {frames: {ext: predicted_frames_ext, wrist: predicted_frames_wrist}}" in text
    back = read_manifest(out)
    assert back.decode_output_names() == ["predicted_frames_ext", "predicted_frames_wrist"]
