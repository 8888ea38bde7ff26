"""Checks of the generated test bundle: ONNX Runtime + Euler sampler == the known function.

Run: ``PYTHONPATH=tests python -m pytest tests/wam_testmodel -q`` (needs onnx, onnxruntime, numpy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from wam_testmodel import BUNDLE_FILES, reference, spec, write_bundle
from wam_testmodel.tokenizer import VOCAB, tokenize, vocab_text

ort = pytest.importorskip("onnxruntime")

TOL = 1e-5
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "wam_test"
REGENERATE = "PYTHONPATH=tests python -m wam_testmodel --out models/wam_test"

INSTRUCTIONS = (
    "reach the red cube",
    "Push the BLUE object to zone marked 'a'!",
    "",
    "touch the green cube, then push it to the zone marked a, quickly",  # > L words, unknown words
    "  ...  totally unknown words  ",
)


class Bundle:
    """The four stages of a bundle folder in ONNX Runtime (CPU)."""

    def __init__(self, folder: Path) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sessions = {
            stage: ort.InferenceSession(
                str(folder / name), opts, providers=["CPUExecutionProvider"]
            )
            for stage, name in spec.STAGE_FILES.items()
        }

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.sessions[stage].run(None, feeds))

    def denoise(
        self,
        xa: np.ndarray,
        xv: np.ndarray,
        t: np.ndarray,
        action_target: np.ndarray,
        video_target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        va, vv = self.run(
            "denoise",
            {
                spec.DENOISE_IN_ACTIONS: xa,
                spec.DENOISE_IN_VIDEO: xv,
                spec.DENOISE_IN_TIME: t,
                spec.CONTEXT_OUT_ACTION: action_target,
                spec.CONTEXT_OUT_VIDEO: video_target,
            },
        )
        return va, vv

    def chunk(
        self, q: np.ndarray, frames: np.ndarray, text: str, rng: np.random.Generator, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Node-side chunk path: normalize, encode, context, Euler, de-normalize, decode."""
        (latents,) = self.run(
            "encode",
            {spec.ENCODE_IN: reference.normalize_frames(frames).reshape(spec.FRAMES_SHAPE)},
        )
        tokens = np.asarray(tokenize(text), dtype=np.int64).reshape(spec.TOKENS_SHAPE)
        action_target, video_target = self.run(
            "context",
            {
                spec.CONTEXT_IN_LATENTS: latents,
                spec.CONTEXT_IN_STATE: reference.normalize_state(q),
                spec.CONTEXT_IN_TOKENS: tokens,
            },
        )
        noise_a = rng.standard_normal(spec.ACTIONS_SHAPE).astype(np.float32)
        noise_v = rng.standard_normal(spec.VIDEO_SHAPE).astype(np.float32)
        xa, xv = reference.euler_sample(
            self.denoise, action_target, video_target, noise_a, noise_v, steps
        )
        (predicted,) = self.run("decode", {spec.DECODE_IN: xv})
        return reference.denormalize_actions(xa), predicted[0]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("wam_test_bundle")
    write_bundle(folder)
    yield folder


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return Bundle(bundle_dir)


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q = rng.uniform(-2.0, 2.0, size=spec.S).astype(np.float32)
    frames = rng.uniform(0.0, 1.0, size=(spec.V, spec.T, 3, spec.HEIGHT, spec.WIDTH)).astype(
        np.float32
    )
    return q, frames


def test_files_written(bundle_dir: Path) -> None:
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(BUNDLE_FILES)
    assert (bundle_dir / spec.VOCAB_FILE).read_text(encoding="utf-8").splitlines() == list(VOCAB)


def test_onnx_signatures(bundle_dir: Path) -> None:
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    Sig = list[tuple[str, int, tuple[int, ...]]]
    expected: dict[str, tuple[Sig, Sig]] = {
        "encode": (
            [(spec.ENCODE_IN, f32, spec.FRAMES_SHAPE)],
            [(spec.ENCODE_OUT, f32, spec.LATENTS_SHAPE)],
        ),
        "context": (
            [
                (spec.CONTEXT_IN_LATENTS, f32, spec.LATENTS_SHAPE),
                (spec.CONTEXT_IN_STATE, f32, spec.STATE_SHAPE),
                (spec.CONTEXT_IN_TOKENS, i64, spec.TOKENS_SHAPE),
            ],
            [
                (spec.CONTEXT_OUT_ACTION, f32, spec.ACTIONS_SHAPE),
                (spec.CONTEXT_OUT_VIDEO, f32, spec.VIDEO_SHAPE),
            ],
        ),
        "denoise": (
            [
                (spec.DENOISE_IN_ACTIONS, f32, spec.ACTIONS_SHAPE),
                (spec.DENOISE_IN_VIDEO, f32, spec.VIDEO_SHAPE),
                (spec.DENOISE_IN_TIME, f32, spec.TIME_SHAPE),
                (spec.CONTEXT_OUT_ACTION, f32, spec.ACTIONS_SHAPE),
                (spec.CONTEXT_OUT_VIDEO, f32, spec.VIDEO_SHAPE),
            ],
            [
                (spec.DENOISE_OUT_ACTIONS, f32, spec.ACTIONS_SHAPE),
                (spec.DENOISE_OUT_VIDEO, f32, spec.VIDEO_SHAPE),
            ],
        ),
        "decode": (
            [(spec.DECODE_IN, f32, spec.VIDEO_SHAPE)],
            [(spec.DECODE_OUT, f32, spec.PREDICTED_FRAMES_SHAPE)],
        ),
    }

    def sig(values: list[onnx.ValueInfoProto]) -> list[tuple[str, int, tuple[int, ...]]]:
        out = []
        for v in values:
            dims = v.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), f"{v.name}: dynamic dim"
            out.append((v.name, v.type.tensor_type.elem_type, tuple(d.dim_value for d in dims)))
        return out

    for stage, (inputs, outputs) in expected.items():
        model = onnx.load(str(bundle_dir / spec.STAGE_FILES[stage]))
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version == spec.IR_VERSION
        assert [(o.domain, o.version) for o in model.opset_import] == [("", spec.OPSET)]
        assert sig(list(model.graph.input)) == inputs, stage
        assert sig(list(model.graph.output)) == outputs, stage


def test_manifest_parses(bundle_dir: Path) -> None:
    yaml = pytest.importorskip("yaml")
    m = yaml.safe_load((bundle_dir / "wam.yaml").read_text(encoding="utf-8"))
    assert m["model_id"] == spec.MODEL_ID
    assert [c["name"] for c in m["cameras"]] == list(spec.CAMERAS)
    assert m["state"]["mean"] == list(spec.STATE_MEAN)
    assert m["action"]["std"] == list(spec.ACTION_STD)
    assert m["video"]["latent_shape"] == [spec.C, spec.LATENT_H, spec.LATENT_W]
    assert m["stages"]["context"]["outputs"] == [spec.CONTEXT_OUT_ACTION, spec.CONTEXT_OUT_VIDEO]
    assert m["stages"]["denoise"]["inputs"]["time"] == spec.DENOISE_IN_TIME


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("reach the red cube", [2, 5, 6, 10, 0, 0, 0, 0]),
        ("Push the BLUE object to zone marked 'a'!", [4, 5, 8, 9, 11, 12, 13, 14]),
        ("", [0] * 8),
        ("  ... !! ", [0] * 8),
        ("<pad> <unk> pad", [1, 1, 1, 0, 0, 0, 0, 0]),
        ("touch\tthe\ngreen (cube) ,to, quickly", [3, 5, 7, 10, 11, 1, 0, 0]),
        ("a a a a a a a a a a reach", [14] * 8),
        ("don't push-it", [1, 1, 0, 0, 0, 0, 0, 0]),
        ("REACH... the-red", [2, 1, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_tokenize(text: str, ids: list[int]) -> None:
    assert tokenize(text) == ids
    assert reference.tokenize(text) == ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("text", INSTRUCTIONS)
def test_ort_matches_function(bundle: Bundle, seed: int, text: str) -> None:
    rng = np.random.default_rng(seed)
    q, frames = _inputs(rng)
    actions, predicted = bundle.chunk(q, frames, text, rng, spec.SAMPLER_STEPS)
    newest = frames[:, spec.T - 1]
    assert actions.shape == (spec.H, spec.A)
    assert predicted.shape == (spec.V, spec.F, 3, spec.HEIGHT, spec.WIDTH)
    np.testing.assert_allclose(
        actions, reference.expected_actions(q, newest, tokenize(text)), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        predicted, reference.expected_predicted_frames(newest), rtol=0, atol=TOL
    )


@pytest.mark.parametrize("steps", [1, 2, 7, 16])
def test_any_step_count_lands_on_target(bundle: Bundle, steps: int) -> None:
    rng = np.random.default_rng(100 + steps)
    q, frames = _inputs(rng)
    text = INSTRUCTIONS[1]
    actions, predicted = bundle.chunk(q, frames, text, rng, steps)
    newest = frames[:, spec.T - 1]
    np.testing.assert_allclose(
        actions, reference.expected_actions(q, newest, tokenize(text)), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        predicted, reference.expected_predicted_frames(newest), rtol=0, atol=TOL
    )


def test_older_frames_do_not_matter(bundle: Bundle) -> None:
    rng = np.random.default_rng(7)
    q, frames = _inputs(rng)
    other = frames.copy()
    other[:, : spec.T - 1] = rng.uniform(0.0, 1.0, size=other[:, : spec.T - 1].shape)
    a1, p1 = bundle.chunk(q, frames, "reach", np.random.default_rng(1), spec.SAMPLER_STEPS)
    a2, p2 = bundle.chunk(q, other, "reach", np.random.default_rng(2), spec.SAMPLER_STEPS)
    np.testing.assert_allclose(a1, a2, rtol=0, atol=TOL)
    np.testing.assert_allclose(p1, p2, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_stages_match_numpy_reference(bundle: Bundle, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, frames = _inputs(rng)
    frames_n = reference.normalize_frames(frames).reshape(spec.FRAMES_SHAPE)
    (latents,) = bundle.run("encode", {spec.ENCODE_IN: frames_n})
    np.testing.assert_allclose(latents, reference.encode(frames_n), rtol=0, atol=1e-6)
    state = reference.normalize_state(q)
    tokens = np.asarray(tokenize(INSTRUCTIONS[1]), dtype=np.int64).reshape(spec.TOKENS_SHAPE)
    feeds = {
        spec.CONTEXT_IN_LATENTS: latents,
        spec.CONTEXT_IN_STATE: state,
        spec.CONTEXT_IN_TOKENS: tokens,
    }
    targets = bundle.run("context", feeds)
    for got, want in zip(targets, reference.context(latents, state, tokens), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    xa = rng.standard_normal(spec.ACTIONS_SHAPE).astype(np.float32)
    xv = rng.standard_normal(spec.VIDEO_SHAPE).astype(np.float32)
    t = np.asarray([0.25], dtype=np.float32)
    for got, want in zip(
        bundle.denoise(xa, xv, t, *targets), reference.denoise(xa, xv, t, *targets), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    (predicted,) = bundle.run("decode", {spec.DECODE_IN: xv})
    np.testing.assert_allclose(predicted, reference.decode(xv), rtol=0, atol=1e-6)


@pytest.mark.parametrize("text", INSTRUCTIONS)
def test_numpy_reference_matches_function(text: str) -> None:
    rng = np.random.default_rng(3)
    q, frames = _inputs(rng)
    ids = tokenize(text)
    noise_a = rng.standard_normal(spec.ACTIONS_SHAPE)
    noise_v = rng.standard_normal(spec.VIDEO_SHAPE)
    actions, predicted = reference.run_bundle_reference(q, frames, ids, noise_a, noise_v)
    newest = frames[:, spec.T - 1]
    np.testing.assert_allclose(
        actions, reference.expected_actions(q, newest, ids), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        predicted, reference.expected_predicted_frames(newest), rtol=0, atol=TOL
    )


def test_known_values() -> None:
    """Hand-checkable case: uniform grey images, q = 0."""
    newest = np.stack([np.full((3, 32, 32), 0.75), np.full((3, 32, 32), 0.25)])
    ids = tokenize("reach the red cube")  # s = 2 + 5 + 6 + 10 = 23
    actions = reference.expected_actions(np.zeros(spec.A), newest, ids)
    rate = 0.02 * 0.5 + 0.001 * 23  # 0.033
    assert actions[0, 0] == pytest.approx(rate)
    assert actions[7, 6] == pytest.approx(8 * (rate + 0.006))
    frames = reference.expected_predicted_frames(newest)
    assert frames[0, 0, 0, 0, 0] == pytest.approx(0.8)
    assert frames[1, 1, 2, 31, 31] == pytest.approx(0.35)


def test_generation_is_deterministic(bundle_dir: Path, tmp_path: Path) -> None:
    write_bundle(tmp_path)
    for name in BUNDLE_FILES:
        assert (tmp_path / name).read_bytes() == (bundle_dir / name).read_bytes(), name
    assert (bundle_dir / spec.VOCAB_FILE).read_text(encoding="utf-8") == vocab_text()


def test_committed_bundle_is_current(bundle_dir: Path) -> None:
    if not COMMITTED_BUNDLE.is_dir():
        pytest.skip(f"{COMMITTED_BUNDLE} not present")
    for name in BUNDLE_FILES:
        committed = COMMITTED_BUNDLE / name
        assert (
            committed.read_bytes() == (bundle_dir / name).read_bytes()
        ), f"{committed} is stale: regenerate with {REGENERATE}"


# -------------------------------------------------------------------------------------------------
# The faulty variant (write_bundle(..., nan_on_unknown_word=True)), for the node's fault tests.


@pytest.fixture(scope="module")
def nan_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("wam_test_nan_bundle")
    write_bundle(folder, nan_on_unknown_word=True)
    yield folder


def test_nan_variant_differs_from_the_test_bundle_only_in_context_and_model_id(
    bundle_dir: Path, nan_bundle_dir: Path
) -> None:
    assert sorted(p.name for p in nan_bundle_dir.iterdir()) == sorted(BUNDLE_FILES)
    for name in BUNDLE_FILES:
        same = (nan_bundle_dir / name).read_bytes() == (bundle_dir / name).read_bytes()
        assert same == (name not in ("wam.yaml", spec.STAGE_FILES["context"])), name
    manifest = (nan_bundle_dir / "wam.yaml").read_text(encoding="utf-8")
    assert manifest == (bundle_dir / "wam.yaml").read_text(encoding="utf-8").replace(
        f"model_id: {spec.MODEL_ID}\n", f"model_id: {spec.NAN_ON_UNKNOWN_WORD_MODEL_ID}\n"
    )


@pytest.mark.parametrize("text", INSTRUCTIONS)
def test_nan_variant_is_nan_exactly_when_the_first_word_is_unknown(
    bundle: Bundle, nan_bundle_dir: Path, text: str
) -> None:
    faulty = Bundle(nan_bundle_dir)
    q, frames = _inputs(np.random.default_rng(11))
    good_a, good_p = bundle.chunk(q, frames, text, np.random.default_rng(5), spec.SAMPLER_STEPS)
    bad_a, bad_p = faulty.chunk(q, frames, text, np.random.default_rng(5), spec.SAMPLER_STEPS)
    np.testing.assert_array_equal(bad_p, good_p)
    if tokenize(text)[0] == spec.UNK_ID:
        assert np.all(np.isnan(bad_a)), bad_a
    else:
        np.testing.assert_array_equal(bad_a, good_a)
    # The numpy reference of the stage agrees.
    latents = reference.encode(reference.normalize_frames(frames).reshape(spec.FRAMES_SHAPE))
    tokens = np.asarray(tokenize(text), dtype=np.int64).reshape(spec.TOKENS_SHAPE)
    state = reference.normalize_state(q)
    feeds: dict[str, np.ndarray] = {
        spec.CONTEXT_IN_LATENTS: latents,
        spec.CONTEXT_IN_STATE: state,
        spec.CONTEXT_IN_TOKENS: tokens,
    }
    got = faulty.run("context", feeds)
    want = reference.context(latents, state, tokens, nan_on_unknown_word=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
