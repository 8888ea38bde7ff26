"""Parity of the committed trained bundles (models/wam_sim, models/wam_sim_action_only) with the PyTorch
model they were exported from: the fixtures parity/case_<i>.json were computed by torch (`make export`);
here ONNX Runtime runs the same pipeline as the Rust node (encode, context once, K Euler steps of denoise,
de-normalize, decode) on the same inputs and noise. No torch needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from wam_model.ort_runner import BundleRunner

REPO = Path(__file__).resolve().parents[1]
BUNDLES = [REPO / "models" / "wam_sim", REPO / "models" / "wam_sim_action_only"]
# case_<i>.json: the single-case fixtures of the export before the kit; seq_<i>.json: the kit's
# multi-chunk fixtures (export/wam_export/fixtures.py), which a re-export writes instead.
CASES = [(b, c) for b in BUNDLES for c in sorted((b / "parity").glob("*.json"))]

ACTION_TOL = 1e-4
FRAME_TOL = 1e-3


def _runner(bundle: Path) -> BundleRunner:
    return BundleRunner(bundle)


def test_fixtures_exist() -> None:
    assert len(list((BUNDLES[0] / "parity").glob("*.json"))) >= 3
    assert len(list((BUNDLES[1] / "parity").glob("*.json"))) >= 1


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_manifest_shapes(bundle: Path) -> None:
    import onnx

    m = yaml.safe_load((bundle / "wam.yaml").read_text())
    assert m["format_version"] == 1
    assert [c["name"] for c in m["cameras"]] == ["exterior", "wrist"]
    assert m["action"]["kind"] == "absolute_joint_position"
    assert m["state"]["joints"] == m["action"]["joints"]
    assert len(m["state"]["mean"]) == len(m["state"]["joints"]) == len(m["action"]["std"])
    for name, st in m["stages"].items():
        model = onnx.load(str(bundle / st["file"]), load_external_data=False)
        assert model.ir_version <= 13, name
        for vi in list(model.graph.input) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), (
                f"{name}.{vi.name} not fixed"
            )
            assert dims[0].dim_value == 1 or name == "denoise" and vi.name == "time", (
                f"{name}.{vi.name} batch"
            )
    vocab = (bundle / m["instruction"]["file"]).read_text().split("\n")
    assert (
        vocab[m["instruction"]["pad_id"]] == "<pad>"
        and vocab[m["instruction"]["unk_id"]] == "<unk>"
    )
    assert "decode" in m["stages"] if bundle.name == "wam_sim" else "decode" not in m["stages"]


@pytest.mark.parametrize(("bundle", "case"), CASES, ids=lambda x: x.name)
def test_parity(bundle: Path, case: Path) -> None:
    c = json.loads(case.read_text())
    if "fixture" in c:
        from wam_export import open_bundle, read_sequence, replay

        rollout = open_bundle(bundle)
        seq = read_sequence(case, rollout.spec)
        for k, e in enumerate(replay(rollout, seq)):
            assert e.actions < ACTION_TOL and e.frames < FRAME_TOL, f"chunk {k}: {e}"
        return
    r = _runner(bundle)
    m = r.manifest
    v, t = len(m["cameras"]), m["context_frames"]
    hgt, wid = m["cameras"][0]["height"], m["cameras"][0]["width"]
    hor, adim = m["action"]["horizon"], len(m["action"]["joints"])
    f = m["video"]["frames"]
    lat = m["video"]["latent_shape"]
    frames = np.asarray(c["frames"], dtype=np.float32).reshape(1, v, t, 3, hgt, wid)
    tokens = np.asarray(c["tokens"], dtype=np.int64)
    assert tokens.shape == (m["instruction"]["max_tokens"],)
    actions, _, out = r.run(
        frames,
        np.asarray(c["state"], dtype=np.float32),
        tokens,
        np.asarray(c["noise_actions"], dtype=np.float32).reshape(1, hor, adim),
        np.asarray(c["noise_video"], dtype=np.float32).reshape(1, v, f, *lat),
        int(c["steps"]),
    )
    want = np.asarray(c["actions"], dtype=np.float32).reshape(hor, adim)
    err = float(np.abs(actions - want).max())
    assert err < ACTION_TOL, f"actions max abs error {err}"
    if c["frames_out"]:
        assert out is not None
        want_f = np.asarray(c["frames_out"], dtype=np.float32).reshape(out.shape)
        ferr = float(np.abs(out - want_f).max())
        assert ferr < FRAME_TOL, f"frames max abs error {ferr}"
        assert out.min() >= 0.0 and out.max() <= 1.0
    else:
        assert out is None
