"""Keeps docs/export_tutorial.md from rotting. Its ```python blocks, joined in order, are one
script; the bundle that script wrote is committed as models/wam_tutorial.

Without torch (`make test`): the blocks' SHA-256 equals the one the script recorded in the bundle's
export_report.json (the tutorial was not edited without re-running it), and the bundle's fixtures
still replay in ONNX Runtime within their tolerance. With torch (`make test-export`, the train
venv): the script runs end to end into a temporary folder and its manifest, fixtures and report
match the committed ones.

    python tests/test_export_tutorial.py --write   # re-runs the tutorial into models/wam_tutorial
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "export_tutorial.md"
BUNDLE = REPO / "models" / "wam_tutorial"


def tutorial_source() -> str:
    """The tutorial's ```python blocks joined with a blank line: the script."""
    blocks = re.findall(r"^```python\n(.*?)^```$", TUTORIAL.read_text(), flags=re.S | re.M)
    assert blocks, "no python blocks in the tutorial"
    return "\n".join(blocks)


def run_tutorial(out: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    script = workdir / "tutorial.py"
    script.write_text(tutorial_source())
    return subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_tutorial_hash_matches_the_committed_bundle() -> None:
    report = json.loads((BUNDLE / "export_report.json").read_text())
    want = hashlib.sha256(tutorial_source().encode()).hexdigest()
    assert report["source_sha256"] == want, (
        "docs/export_tutorial.md changed since models/wam_tutorial was written: "
        "run `python tests/test_export_tutorial.py --write` (train venv)"
    )


def test_tutorial_bundle_replays_in_onnx_runtime() -> None:
    from wam_export import open_bundle, read_sequence, replay

    rollout = open_bundle(BUNDLE)
    assert rollout.spec.format_version == 2
    seqs = sorted((BUNDLE / "parity").glob("seq_*.json"))
    assert seqs
    for path in seqs:
        seq = read_sequence(path, rollout.spec)
        assert len(seq.chunks) >= 5
        for k, e in enumerate(replay(rollout, seq)):
            assert e.within(seq.tolerance), f"{path.name} chunk {k}: {e}"


def test_tutorial_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "bundle"
    r = run_tutorial(out, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chunk 5: actions max abs error" in r.stdout
    assert (out / "wam.yaml").read_text() == (BUNDLE / "wam.yaml").read_text()
    got = json.loads((out / "export_report.json").read_text())
    want = json.loads((BUNDLE / "export_report.json").read_text())
    assert got["source_sha256"] == want["source_sha256"]
    assert got["onnx_bytes"] == want["onnx_bytes"]
    a = json.loads((out / "parity" / "seq_0.json").read_text())
    b = json.loads((BUNDLE / "parity" / "seq_0.json").read_text())
    assert len(a["chunks"]) == len(b["chunks"])
    for ca, cb in zip(a["chunks"], b["chunks"]):
        for key in ("frames", "state", "tokens", "noise_actions", "noise_video"):
            assert ca[key] == cb[key], key
        for key in ("actions", "video_latents", "frames_out"):
            assert np.abs(np.asarray(ca[key]) - np.asarray(cb[key])).max() < 1e-5, key


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        r = run_tutorial(BUNDLE, Path(d))
    print(r.stdout + r.stderr)
    raise SystemExit(r.returncode)
