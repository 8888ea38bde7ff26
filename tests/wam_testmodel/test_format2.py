"""Checks of the format-2 test bundles (models/wam_test_state, models/wam_test_state_f16): the
committed files and fixture are what the generator writes, and ONNX Runtime on the graphs computes
the numpy reference (tests/runtime_format2.rs compares the node with that reference).

Run: ``PYTHONPATH=tests python -m pytest tests/wam_testmodel -q``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wam_testmodel import format2 as f2

ort = pytest.importorskip("onnxruntime")

REGENERATE = "PYTHONPATH=tests python -m wam_testmodel.format2"


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_committed_bundles_are_current(kind: str, tmp_path: Path) -> None:
    written = f2.write_bundle(tmp_path, half=kind == "f16")
    for path in written:
        committed = f2.BUNDLES[kind] / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: {REGENERATE}"


def test_committed_fixture_is_current() -> None:
    committed = json.loads(f2.FIXTURE.read_text())
    fresh = json.loads(f2.dumps(f2.fixture()))
    assert committed == fresh, f"{f2.FIXTURE} is stale: {REGENERATE}"


def _session(kind: str, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(f2.BUNDLES[kind] / name), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("length", [0, 2])
def test_context_graph_computes_the_reference(kind: str, length: int) -> None:
    dtype = np.float16 if kind == "f16" else np.float32
    tol = 2e-2 if kind == "f16" else 1e-5
    rng = np.random.default_rng(length)
    latents = rng.uniform(-1, 1, f2.LATENTS_SHAPE)
    state = rng.uniform(-1, 1, (1, f2.S))
    tokens = np.array([[2, 3, 0, 0]], dtype=np.int64)
    past_k = rng.uniform(-1, 1, f2.PAST_K_SHAPE)
    past_v = rng.uniform(-1, 1, f2.PAST_V_SHAPE)
    got = _session(kind, "context.onnx").run(
        ["action_target", "video_target", "present_k", "present_v"],
        {
            "latents": latents.astype(dtype),
            "state": state.astype(dtype),
            "tokens": tokens,
            "past_k": past_k.astype(dtype),
            "past_v": past_v.astype(dtype),
            "past_length": np.array([length], dtype=np.int64),
            "chunk_index": np.array([3], dtype=np.int64),
        },
    )
    want = f2.context_reference(latents, state, tokens, past_k, past_v, length, 3)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert np.abs(g.astype(np.float64) - w).max() < tol


def test_denoise_graph_takes_a_batch_of_two() -> None:
    rng = np.random.default_rng(5)
    feeds = {
        "noisy_actions": rng.standard_normal((2, f2.H, f2.A)).astype(np.float32),
        "noisy_video": rng.standard_normal((2, *f2.VIDEO_SHAPE[1:])).astype(np.float32),
        "time": np.array([0.25, 0.5], dtype=np.float32),
        "action_target": rng.standard_normal((2, f2.H, f2.A)).astype(np.float32),
        "video_target": rng.standard_normal((2, *f2.VIDEO_SHAPE[1:])).astype(np.float32),
    }
    va, vv = _session("f32", "denoise.onnx").run(None, feeds)
    t = feeds["time"].reshape(2, 1, 1)
    want = (feeds["action_target"] - feeds["noisy_actions"]) / (1 - t) + f2.DRIFT * t
    assert np.abs(va - want).max() < 1e-5
    assert vv.shape == (2, *f2.VIDEO_SHAPE[1:])
