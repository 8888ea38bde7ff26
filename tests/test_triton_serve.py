"""wam_export.triton_serve against a real tritonserver (PyTriton's, Python backend): a Triton model
repository written from the committed bundles (models/wam_sim, models/wam_test_state) is served on
free ports, every stage is run over KServe v2 HTTP (binary tensors, tritonclient) and compared
with ONNX Runtime run here; a config that disagrees with its ONNX file is refused; SIGTERM and
SIGKILL of the server leave no tritonserver behind. No mocks.

PyTriton needs numpy<2, so requirements/triton.txt lives in its own venv, .prefix-triton: run the
whole file with `.prefix-triton/bin/python -m pytest tests/test_triton_serve.py` (after
`source scripts/env.sh`). Under .prefix (numpy 2, no tritonclient) the config checks run with the
fallback parser, the server tests that need no client run the CLI (which re-executes itself
under .prefix-triton), and the rest is skipped.

The repositories are what `wam_policy_node triton-repo` writes (the built node, WAM_NODE_BIN or
target/release/wam_policy_node), so the server's config checks also check that subcommand's output
against the ONNX files with Triton's own ModelConfig parser."""

from __future__ import annotations

import importlib.util
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from numpy.typing import NDArray
from wam_export.triton_serve import (
    _pytriton_usable,
    _spec_protobuf,
    _spec_text,
    _sweep_stale_workdirs,
    load_repository,
)

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
STAGES = ("encode", "context", "denoise", "decode")
READY_TIMEOUT_S = 60.0
TRITON_PYTHON = Path(os.environ.get("WAM_TRITON_PYTHON") or REPO / ".prefix-triton/bin/python")
NODE_BIN = Path(
    os.environ.get("WAM_NODE_BIN", str(REPO / "target" / "release" / "wam_policy_node"))
)

needs_server = pytest.mark.skipif(
    _pytriton_usable() is not None and not TRITON_PYTHON.is_file(),
    reason="needs requirements/triton.txt (.prefix-triton, made by scripts/setup.sh)",
)


needs_client = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None,
    reason="needs tritonclient (requirements/triton.txt): run under .prefix-triton/bin/python",
)


def _http() -> Any:
    import tritonclient.http

    return tritonclient.http


_NP_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
}
_WIRE_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(int64)": "INT64"}


# --- the repository ---------------------------------------------------------------------------------
def write_repository(bundle: Path, out: Path, prefix: str = "") -> dict[str, Path]:
    """The Triton model repository `wam_policy_node triton-repo <bundle> <out> --prefix P --cpu`
    writes: one model per stage of its wam.yaml, <out>/<prefix><stage>/config.pbtxt and
    <out>/<prefix><stage>/1/model.onnx. Returns {stage: model folder}."""
    r = subprocess.run(
        [str(NODE_BIN), "triton-repo", str(bundle), str(out), "--prefix", prefix, "--cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, f"{NODE_BIN} triton-repo failed:\n{r.stdout}{r.stderr}"
    manifest = yaml.safe_load((bundle / "wam.yaml").read_text())
    return {s: out / f"{prefix}{s}" for s in STAGES if manifest["stages"].get(s)}


# --- inputs ---------------------------------------------------------------------------------------
def stage_inputs(
    bundle: Path, stage: str, rng: np.random.Generator, batch: int = 1
) -> dict[str, NDArray[Any]]:
    """Random inputs of the declared shapes of `stage` (dynamic dims: `batch`). Floats are standard
    normal; int64 inputs small non-negative ints, valid for what they mean (token ids; for a carried
    context state, a block-aligned past length that leaves room for one block, a chunk index)."""
    manifest = yaml.safe_load((bundle / "wam.yaml").read_text())
    entry = manifest["stages"][stage]
    state = entry.get("state") or {}
    sess = ort.InferenceSession(str(bundle / entry["file"]), providers=["CPUExecutionProvider"])
    feeds: dict[str, NDArray[Any]] = {}
    for a in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in a.shape]
        dtype = _NP_TYPES[a.type]
        if dtype == np.int64:
            if a.name == state.get("length"):
                first = state["tensors"][0]["input"]
                cap = next(i.shape for i in sess.get_inputs() if i.name == first)[state["axis"]]
                block = state["block"]
                feeds[a.name] = np.full(shape, block * rng.integers(0, cap // block), np.int64)
            elif a.name == state.get("position"):
                feeds[a.name] = rng.integers(0, 4, size=shape).astype(np.int64)
            else:  # token ids
                feeds[a.name] = rng.integers(0, 8, size=shape).astype(np.int64)
        else:
            feeds[a.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run_local(bundle: Path, stage: str, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    file = bundle / yaml.safe_load((bundle / "wam.yaml").read_text())["stages"][stage]["file"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def run_remote(
    client: Any, model: str, bundle: Path, stage: str, feeds: dict[str, NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    httpclient = _http()
    file = bundle / yaml.safe_load((bundle / "wam.yaml").read_text())["stages"][stage]["file"]
    sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    inputs = []
    for a in sess.get_inputs():
        inp = httpclient.InferInput(a.name, list(feeds[a.name].shape), _WIRE_TYPES[a.type])
        inp.set_data_from_numpy(feeds[a.name], binary_data=True)
        inputs.append(inp)
    names = [o.name for o in sess.get_outputs()]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in names]
    result = client.infer(model, inputs, outputs=outputs)
    return {n: result.as_numpy(n) for n in names}


# --- the server process ----------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    descendants: set[int]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(d.name))
    return out


def descendants(pid: int) -> set[int]:
    todo: list[int] = [pid]
    seen: set[int] = set()
    while todo:
        for c in _children(todo.pop()) - seen:
            seen.add(c)
            todo.append(c)
    return seen


def _exe_name(pid: int) -> str | None:
    """The process's command name, None once it is gone (or a zombie)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    name, rest = stat.split("(", 1)[1].rsplit(")", 1)
    return None if rest.split()[0] == "Z" else name


def start_server(repo: Path, log: Path, http_port: int = 0) -> Server:
    """`python -m wam_export.triton_serve repo` on `http_port` (0: a free one) and free other
    ports, its stderr appended to `log`; returns once it prints ready."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ports = ["--http-port", str(http_port)] if http_port else []
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wam_export.triton_serve", str(repo), *ports],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT_S
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait()
            pytest.fail(f"server not ready (rc {proc.returncode}):\n{log.read_text()[-4000:]}")
        if sel.select(timeout=min(left, 0.5)):
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
    sel.close()
    line = buf.split(b"\n", 1)[0].decode()
    assert line.startswith("ready http://127.0.0.1:"), line
    return Server(proc, line.split()[1], log, descendants(proc.pid))


def assert_gone(pids: set[int], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    alive = {p: n for p in pids if (n := _exe_name(p)) is not None}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p: n for p in alive if (n := _exe_name(p)) is not None}
    assert not alive, f"left behind: {alive}"


def stop_server(server: Server, sig: int) -> None:
    server.descendants |= descendants(server.proc.pid)
    assert any(_exe_name(p) == "tritonserver" for p in server.descendants)
    server.proc.send_signal(sig)
    server.proc.wait(timeout=30)
    assert_gone(server.descendants)


# --- tests ------------------------------------------------------------------------------------------
BUNDLES = {"sim_": MODELS / "wam_sim", "state_": MODELS / "wam_test_state"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Both bundles in one repository (model names prefixed), one server for the module."""
    root = tmp_path_factory.mktemp("triton")
    repo = root / "repo"
    for prefix, bundle in BUNDLES.items():
        write_repository(bundle, repo, prefix)
    s = start_server(repo, root / "server.log")
    yield s
    if s.proc.poll() is None:
        stop_server(s, signal.SIGTERM)


def _cases() -> list[tuple[str, str, int]]:
    out = []
    for prefix, bundle in BUNDLES.items():
        stages = yaml.safe_load((bundle / "wam.yaml").read_text())["stages"]
        out += [(prefix, s, 1) for s in STAGES if s in stages]
    out.append(("state_", "denoise", 2))  # dynamic batch: both guidance branches at once
    return out


@needs_server
@needs_client
@pytest.mark.parametrize(("prefix", "stage", "batch"), _cases(), ids=lambda v: str(v))
def test_stage_matches_onnxruntime(server: Server, prefix: str, stage: str, batch: int) -> None:
    httpclient = _http()
    bundle = BUNDLES[prefix]
    rng = np.random.default_rng(zlib.crc32(f"{prefix}{stage}{batch}".encode()))
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        for _ in range(2):
            feeds = stage_inputs(bundle, stage, rng, batch)
            got = run_remote(client, prefix + stage, bundle, stage, feeds)
            want = run_local(bundle, stage, feeds)
            for name, w in want.items():
                assert got[name].dtype == w.dtype, name
                assert got[name].shape == w.shape, name
                np.testing.assert_allclose(got[name], w, rtol=1e-6, atol=1e-6, err_msg=name)
    finally:
        client.close()


def test_config_mismatch_is_refused(tmp_path: Path) -> None:
    bundle = MODELS / "wam_sim"
    write_repository(bundle, tmp_path)
    assert [m.name for m in load_repository(tmp_path)] == ["context", "decode", "denoise", "encode"]

    cfg = tmp_path / "encode" / "config.pbtxt"
    good = cfg.read_text()
    cfg.write_text(good.replace("dims: [ 1, 2, 2, 3, 64, 64 ]", "dims: [ 1, 2, 3, 64, 64 ]"))
    with pytest.raises(
        ValueError, match=r"model 'encode': input 'frames': dims \[1, 2, 3, 64, 64\]"
    ):
        load_repository(tmp_path)

    cfg.write_text(good.replace("data_type: TYPE_FP32", "data_type: TYPE_FP16", 2))
    with pytest.raises(ValueError, match="model 'encode': input 'frames': data_type TYPE_FP16"):
        load_repository(tmp_path)

    cfg.write_text(good.replace('name: "latents"', 'name: "latent"'))
    with pytest.raises(ValueError, match="model 'encode': output 'latent': name not in"):
        load_repository(tmp_path)


def test_parsers_agree(tmp_path: Path) -> None:
    """The fallback parser (no tritonclient) reads the configs as protobuf's text format does."""
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient: run under .prefix-triton")
    pytest.importorskip("google.protobuf")
    for prefix, bundle in BUNDLES.items():
        write_repository(bundle, tmp_path, prefix)
    configs = sorted(tmp_path.glob("*/config.pbtxt"))
    assert len(configs) == 7
    for cfg in configs:
        text = cfg.read_text()
        assert _spec_text(text, cfg.parent.name) == _spec_protobuf(text, cfg.parent.name), cfg


@needs_server
def test_cli_refuses_a_bad_repository(tmp_path: Path) -> None:
    write_repository(MODELS / "wam_test_state", tmp_path)
    cfg = tmp_path / "denoise" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: [ -1, 4, 2 ]", "dims: [ -1, 4, 3 ]", 1))
    r = subprocess.run(
        [sys.executable, "-m", "wam_export.triton_serve", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert "model 'denoise': input 'noisy_actions': dims [-1, 4, 3]" in r.stderr


@needs_server
def test_sigkill_leaves_no_tritonserver(tmp_path: Path) -> None:
    """After SIGKILL of the Python process, its tritonserver (pytriton starts it with a parent-death
    signal), the Python stubs and their helpers end too; the work folder it leaves is removed by
    the next start (here: the sweep that start runs)."""
    write_repository(MODELS / "wam_test_state", tmp_path / "repo")
    for stage in ("context", "denoise"):  # one model is enough, and quicker to load
        shutil.rmtree(tmp_path / "repo" / stage)
    s = start_server(tmp_path / "repo", tmp_path / "server.log")
    stop_server(s, signal.SIGKILL)
    tmp = Path(tempfile.gettempdir())
    left = list(tmp.glob(f"wam_triton_{s.proc.pid}_*"))
    assert len(left) == 1
    _sweep_stale_workdirs(tmp)
    assert not left[0].exists()


@needs_server
def test_sigterm_stops_cleanly(server: Server) -> None:
    """SIGTERM: exit status 0, no tritonserver, stub or helper left, work folder removed. (Runs
    last: it stops the module's server.)"""
    stop_server(server, signal.SIGTERM)
    assert server.proc.returncode == 0, server.log.read_text()[-4000:]
    assert not list(Path(tempfile.gettempdir()).glob(f"wam_triton_{server.proc.pid}_*"))
