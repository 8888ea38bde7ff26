"""Serve a Triton model repository of ONNX stages (what `wam_policy_node triton-repo` writes) with
ONNX Runtime inside PyTriton, so that the node's `remote` backend can be tested against a real
`tritonserver` (KServe v2 HTTP/gRPC) on a CPU machine. No torch.

A real Triton serves such a repository with its ONNX Runtime backend; the `tritonserver` shipped in
the `nvidia-pytriton` wheel has the Python backend only, so each model here is a PyTriton binding
whose callable runs the model's `<version>/model.onnx` in ONNX Runtime (CPU). The repository's
`config.pbtxt` files are checked against the ONNX files (names, element types, dims) first, as the
ONNX Runtime backend would.

    python -m wam_export.triton_serve <repo> [--http-port N] [--grpc-port M] [--metrics-port K]

prints `ready http://127.0.0.1:<N>` on stdout once the server and every model answer ready;
everything else goes to stderr. Ports left at 0 are free ones picked at start. SIGTERM/SIGINT stop
the server and its `tritonserver` (exit 0); on SIGKILL, pytriton's parent-death signal stops the
`tritonserver`. The command re-executes itself when needed: under requirements/triton.txt's venv
(.prefix-triton, or $WAM_TRITON_PYTHON) when this interpreter cannot run PyTriton (not installed,
or numpy 2), and with the interpreter's libpython folder on LD_LIBRARY_PATH (the Python backend
stub needs it).

`load_repository` and `read_config` need neither pytriton nor tritonclient (a small text-format
parser stands in for tritonclient's ModelConfig message); pytriton is imported only by `serve`,
so `import wam_export` never needs it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

__all__ = [
    "ModelSpec",
    "ServedModel",
    "TensorConfig",
    "free_port",
    "load_repository",
    "main",
    "read_config",
    "serve",
    "wait_ready",
]

LOG = logging.getLogger("wam_export.triton_serve")

# Triton's TYPE_* names -> numpy element types (those a bundle can use and a few more).
TRITON_DTYPES: dict[str, type[np.generic]] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}
# ONNX Runtime's type strings -> Triton's TYPE_* names.
ORT_TO_TRITON: dict[str, str] = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
}

# Name of the marker file in each instance's work folder (temp dir), holding the owner's pid.
_MARKER = "wam_triton_serve.pid"
_WORKDIR_PREFIX = "wam_triton_"
_REEXEC_ENV = "WAM_TRITON_SERVE_REEXEC"
_DELEGATED_ENV = "WAM_TRITON_SERVE_DELEGATED"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TensorConfig:
    """One `input`/`output` entry of a config.pbtxt."""

    name: str
    data_type: str  # Triton's TYPE_* name
    dims: tuple[int, ...]  # -1: any size

    @property
    def dtype(self) -> type[np.generic]:
        return TRITON_DTYPES[self.data_type]


@dataclass
class ServedModel:
    """A model of the repository: its config, checked against the ONNX file, and the ORT session."""

    name: str
    version: int
    onnx_path: Path
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    session: ort.InferenceSession

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Runs the session on `feeds` (cast to the config's types); outputs in the config's types."""
        cast = {t.name: np.asarray(feeds[t.name]).astype(t.dtype, copy=False) for t in self.inputs}
        outs = self.session.run([t.name for t in self.outputs], cast)
        return {
            t.name: np.asarray(o).astype(t.dtype, copy=False)
            for t, o in zip(self.outputs, outs, strict=True)
        }


# --- the repository ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """The fields of a config.pbtxt (inference.ModelConfig) that serving here depends on."""

    name: str
    backend: str
    platform: str
    max_batch_size: int
    default_model_filename: str
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]


def _tensor(model: str, kind: str, name: str, data_type: str, dims: Sequence[int]) -> TensorConfig:
    if data_type not in TRITON_DTYPES:
        raise ValueError(
            f"model {model!r}: {kind} {name!r}: data_type {data_type} is not supported"
        )
    if any(d < -1 for d in dims):
        raise ValueError(f"model {model!r}: {kind} {name!r}: dims {list(dims)} are invalid")
    return TensorConfig(name, data_type, tuple(int(d) for d in dims))


def _unique(model: str, kind: str, tensors: list[TensorConfig]) -> tuple[TensorConfig, ...]:
    names = [t.name for t in tensors]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"model {model!r}: {kind} {dups[0]!r}: name listed twice")
    return tuple(tensors)


def _spec_protobuf(text: str, folder: str) -> ModelSpec:
    """Parsed by protobuf's text format into tritonclient's inference.ModelConfig (unknown fields
    and wrong types are errors)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        config = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise ValueError(f"model {folder!r}: config.pbtxt: {e}") from e
    model = config.name or folder
    tensors: dict[str, list[TensorConfig]] = {"input": [], "output": []}
    for kind, entries in (("input", config.input), ("output", config.output)):
        for entry in entries:
            if entry.HasField("reshape"):
                raise ValueError(
                    f"model {model!r}: {kind} {entry.name!r}: reshape is not supported"
                )
            name = pb.DataType.Name(entry.data_type)
            tensors[kind].append(_tensor(model, kind, entry.name, name, list(entry.dims)))
    return ModelSpec(
        config.name,
        config.backend,
        config.platform,
        int(config.max_batch_size),
        config.default_model_filename,
        _unique(model, "input", tensors["input"]),
        _unique(model, "output", tensors["output"]),
    )


# Text-format tokens: whitespace and comments (skipped), strings, numbers, identifiers, punctuation.
_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
    |(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?[fF]?)
    |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[{}\[\]<>:,;])""",
    re.VERBOSE,
)
_Fields = dict[str, list[Any]]


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"line {line}: unexpected {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        if kind != "skip":
            out.append((kind, m.group(), text.count("\n", 0, pos) + 1))
        pos = m.end()
    return out


class _TextFormat:
    """A small parser of protobuf's text format (the subset Triton's configs use: scalars,
    messages in {} or <>, repeated fields as [a, b] lists or repeated entries) into nested
    {field: [values]}; no schema, so unknown fields pass (and are not used)."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _error(self, what: str) -> ValueError:
        tok = self._peek()
        where = f"line {tok[2]}: {tok[1]!r}" if tok else "end of file"
        return ValueError(f"{where}: expected {what}")

    def _accept(self, punct: str) -> bool:
        tok = self._peek()
        if tok is not None and tok[0] == "punct" and tok[1] == punct:
            self.i += 1
            return True
        return False

    def message(self, end: str | None = None) -> _Fields:
        fields: _Fields = {}
        while True:
            tok = self._peek()
            if tok is None:
                if end is None:
                    return fields
                raise self._error(repr(end))
            if end is not None and self._accept(end):
                return fields
            if tok[0] != "id":
                raise self._error("a field name")
            self.i += 1
            colon = self._accept(":")
            if self._accept("["):
                values: list[Any] = []
                if not self._accept("]"):
                    while True:
                        values.append(self._value(colon))
                        if self._accept("]"):
                            break
                        if not self._accept(","):
                            raise self._error("',' or ']'")
            else:
                values = [self._value(colon)]
            fields.setdefault(tok[1], []).extend(values)
            if not self._accept(","):
                self._accept(";")

    def _value(self, colon: bool) -> Any:
        if self._accept("{"):
            return self.message("}")
        if self._accept("<"):
            return self.message(">")
        tok = self._peek()
        if not colon or tok is None or tok[0] not in ("str", "num", "id"):
            raise self._error("a value")
        self.i += 1
        kind, text = tok[0], tok[1]
        if kind == "str":
            return str(ast.literal_eval(text))
        if kind == "num":
            t = text.rstrip("fF")
            return float(t) if any(c in t for c in ".eE") else int(t)
        return text  # enum value, true/false, inf, nan


def _one(model: str, fields: _Fields, key: str, kind: type, default: Any, where: str = "") -> Any:
    values = fields.get(key, [])
    if len(values) > 1:
        raise ValueError(f"model {model!r}: {where}{key}: given {len(values)} times")
    value = values[0] if values else default
    if not isinstance(value, kind) or isinstance(value, bool):
        what = "an integer" if kind is int else "a string"
        msg = f"model {model!r}: {where}{key}: {value!r} is not {what}"
        raise ValueError(msg)  # noqa: TRY004 (a config error, as every other)
    return value


def _spec_text(text: str, folder: str) -> ModelSpec:
    """Parsed by _TextFormat (when tritonclient is not installed)."""
    try:
        fields = _TextFormat(text).message()
    except ValueError as e:
        raise ValueError(f"model {folder!r}: config.pbtxt: {e}") from e
    name = _one(folder, fields, "name", str, "")
    model = name or folder
    tensors: dict[str, list[TensorConfig]] = {"input": [], "output": []}
    for kind in ("input", "output"):
        for entry in fields.get(kind, []):
            if not isinstance(entry, dict):
                msg = f"model {model!r}: {kind}: {entry!r} is not a message"
                raise ValueError(msg)  # noqa: TRY004 (a config error, as every other)
            tname = _one(model, entry, "name", str, "", f"{kind} ")
            where = f"{kind} {tname!r}: "
            if "reshape" in entry:
                raise ValueError(f"model {model!r}: {where}reshape is not supported")
            data_type = _one(model, entry, "data_type", str, "TYPE_INVALID", where)
            dims = entry.get("dims", [])
            if not all(isinstance(d, int) for d in dims):
                raise ValueError(f"model {model!r}: {where}dims {dims} are not integers")
            tensors[kind].append(_tensor(model, kind, tname, data_type, dims))
    return ModelSpec(
        name,
        _one(model, fields, "backend", str, ""),
        _one(model, fields, "platform", str, ""),
        _one(model, fields, "max_batch_size", int, 0),
        _one(model, fields, "default_model_filename", str, ""),
        _unique(model, "input", tensors["input"]),
        _unique(model, "output", tensors["output"]),
    )


def read_config(path: Path) -> ModelSpec:
    """A model's config.pbtxt: with tritonclient's ModelConfig message (protobuf text format) when
    tritonclient is installed, else with a small parser of the same format."""
    text = Path(path).read_text()
    folder = Path(path).parent.name
    try:
        import google.protobuf.text_format  # noqa: F401
        import tritonclient.grpc.model_config_pb2  # noqa: F401
    except ImportError:
        return _spec_text(text, folder)
    return _spec_protobuf(text, folder)


def _latest_version(model_dir: Path, filename: str) -> int:
    versions = [
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / filename).is_file()
    ]
    if not versions:
        raise ValueError(f"model {model_dir.name!r}: no <version>/{filename} in {model_dir}")
    return max(versions)


def _shape_str(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in shape) + "]"


def _check_tensor(model: str, kind: str, cfg: TensorConfig, arg: Any, onnx_path: Path) -> None:
    """`cfg` against the ONNX file's declaration `arg` (an ort.NodeArg): type, rank, sizes."""
    file_type = ORT_TO_TRITON.get(arg.type)
    if file_type != cfg.data_type:
        raise ValueError(
            f"model {model!r}: {kind} {cfg.name!r}: data_type {cfg.data_type} does not match the "
            f"ONNX file's {arg.type} ({onnx_path})"
        )
    shape = list(arg.shape)
    ok = len(shape) == len(cfg.dims) and all(
        c == -1 or not isinstance(f, int) or c == f for c, f in zip(cfg.dims, shape, strict=True)
    )
    if not ok:
        raise ValueError(
            f"model {model!r}: {kind} {cfg.name!r}: dims {list(cfg.dims)} do not match the ONNX "
            f"file's shape {_shape_str(shape)} ({onnx_path})"
        )


def _open_model(model_dir: Path, threads: int) -> ServedModel:
    config = read_config(model_dir / "config.pbtxt")
    name = config.name or model_dir.name
    if name != model_dir.name:
        raise ValueError(
            f"model {model_dir.name!r}: name {config.name!r} differs from its folder's name"
        )
    if config.backend not in ("", "onnxruntime") or config.platform not in ("", "onnxruntime_onnx"):
        raise ValueError(
            f"model {name!r}: backend {config.backend!r} / platform {config.platform!r}: "
            "only ONNX models (backend onnxruntime) are served"
        )
    if not config.backend and not config.platform:
        raise ValueError(f"model {name!r}: backend: neither backend nor platform is set")
    if config.max_batch_size != 0:
        raise ValueError(
            f"model {name!r}: max_batch_size {config.max_batch_size}: only 0 (full shapes in dims) "
            "is served"
        )
    inputs, outputs = config.inputs, config.outputs
    if not outputs:
        raise ValueError(f"model {name!r}: output: none listed")
    filename = config.default_model_filename or "model.onnx"
    version = _latest_version(model_dir, filename)
    onnx_path = model_dir / str(version) / filename

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    file_inputs = {a.name: a for a in session.get_inputs()}
    file_outputs = {a.name: a for a in session.get_outputs()}
    for kind, cfgs, declared in (("input", inputs, file_inputs), ("output", outputs, file_outputs)):
        for cfg in cfgs:
            if cfg.name not in declared:
                raise ValueError(
                    f"model {name!r}: {kind} {cfg.name!r}: name not in the ONNX file's {kind}s "
                    f"{sorted(declared)} ({onnx_path})"
                )
            _check_tensor(name, kind, cfg, declared[cfg.name], onnx_path)
    missing = sorted(set(file_inputs) - {t.name for t in inputs})
    if missing:
        raise ValueError(
            f"model {name!r}: input {missing[0]!r}: the ONNX file needs it but the config does not "
            f"list it ({onnx_path})"
        )
    return ServedModel(name, version, onnx_path, inputs, outputs, session)


def load_repository(repo: Path, threads: int = 1) -> list[ServedModel]:
    """Every model of the Triton repository `repo` (each subfolder with a config.pbtxt, sorted by
    name), opened in ONNX Runtime (CPU, `threads` intra-op threads) and checked against its config.

    Raises ValueError naming the model, the tensor and the field on a mismatch (or when `repo`
    holds no model)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ValueError(f"{repo}: not a folder")
    models = [
        _open_model(d, threads)
        for d in sorted(repo.iterdir())
        if d.is_dir() and (d / "config.pbtxt").is_file()
    ]
    if not models:
        raise ValueError(f"{repo}: no model (no <name>/config.pbtxt)")
    return models


# --- the server --------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the kernel's pick; another process may take it before use)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (bound as servers bind, with SO_REUSEADDR)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _pick_ports(requested: Sequence[int], host: str = "127.0.0.1") -> list[int]:
    """`requested` with each 0 replaced by a free port distinct from the others; ValueError when a
    given port is in use (a server already there would answer in this one's stead)."""
    given = [p for p in requested if p]
    if len(set(given)) < len(given):
        raise ValueError(f"ports {list(requested)}: the same port given twice")
    for p in given:
        if not _port_free(p, host):
            raise ValueError(f"port {p} is in use")
    taken = set(given)
    out: list[int] = []
    for p in requested:
        if not p:
            p = free_port(host)
            while p in taken:
                p = free_port(host)
            taken.add(p)
        out.append(p)
    return out


def _infer_func(model: ServedModel) -> Callable[[list[Any]], list[dict[str, NDArray[Any]]]]:
    names = [t.name for t in model.inputs]

    def infer(requests: list[Any]) -> list[dict[str, NDArray[Any]]]:
        return [model.run({n: req[n] for n in names}) for req in requests]

    return infer


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_workdirs(tmp: Path) -> None:
    """Removes work folders left by instances that died without cleaning up (SIGKILL): pytriton
    copies its tritonserver (about 30 MB) into each."""
    for d in tmp.glob(_WORKDIR_PREFIX + "*"):
        try:
            pid = int((d / _MARKER).read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return 0


def wait_ready(url: str, models: Sequence[str], timeout_s: float) -> bool:
    """Polls `url`'s /v2/health/ready and every model's /v2/models/<name>/ready until all answer
    200 or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
    while time.monotonic() < deadline:
        if all(_get(url + p) == 200 for p in paths):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """os.environ with `values` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve(
    repo: Path,
    http_port: int = 0,
    grpc_port: int = 0,
    metrics_port: int = 0,
    *,
    address: str = "127.0.0.1",
    threads: int = 1,
    log_verbose: int = 0,
    ready_timeout_s: float = 120.0,
    on_ready: Callable[[str], None] | None = None,
    models: list[ServedModel] | None = None,
) -> None:
    """Serves every model of `repo` (load_repository) on a PyTriton tritonserver until it stops
    (SIGINT, or KeyboardInterrupt raised in the calling thread, e.g. by a SIGTERM handler).
    Blocking; call it from the main thread (pytriton asks the kernel to SIGTERM its tritonserver
    when the thread that started it ends).

    Ports 0 are free ones; a given port already in use is a ValueError. The server binds
    `address` (0.0.0.0: all); clients on this machine use 127.0.0.1. `on_ready(url)` runs (in the
    calling thread) once the server and every model answer ready. `models`: those of `repo`,
    when already loaded. pytriton's work files (model store, sockets, its tritonserver copy,
    tritonserver's temp files) go to a fresh folder under the temp dir, removed on stop, so
    instances never share files; folders of killed instances are removed by the next start."""
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    if models is None:
        models = load_repository(Path(repo), threads)
    ports = _pick_ports([http_port, grpc_port, metrics_port], address or "0.0.0.0")
    http_port, grpc_port, metrics_port = ports

    tmp = Path(tempfile.gettempdir())
    _sweep_stale_workdirs(tmp)
    workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}_", dir=tmp))
    (workdir / _MARKER).write_text(f"{os.getpid()}\n")
    try:
        config = TritonConfig(
            http_address=address,
            http_port=http_port,
            grpc_address=address,
            grpc_port=grpc_port,
            metrics_address=address,
            metrics_port=metrics_port,
            allow_gpu_metrics=False,
            log_verbose=log_verbose,
            cache_directory=str(workdir / "cache"),
            exit_on_error=True,
            # Clients keep HTTP connections alive (the node's does); do not wait 30 s for them to close.
            exit_timeout_secs=2,
        )
        triton = Triton(config=config, workspace=workdir / "pytriton")
        try:
            for m in models:
                triton.bind(
                    model_name=m.name,
                    model_version=m.version,
                    infer_func=_infer_func(m),
                    inputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.dims) for t in m.inputs],
                    outputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.dims) for t in m.outputs],
                    config=ModelConfig(batching=False),
                )
            # tritonserver and its Python stubs take this process's environment when started
            # (run): their temp files (Triton's per-model config copies, the stubs' spawned
            # helpers) go to the work folder too. run() returns once pytriton has loaded every
            # model into the server with this instance's access token, so the server answering
            # below is this one, not another on the same port.
            with _environ(TMPDIR=str(workdir / "tmp")):
                (workdir / "tmp").mkdir()
                triton.run()
            host = "127.0.0.1" if address in ("", "0.0.0.0") else address
            url = f"http://{host}:{http_port}"
            if not triton.is_alive() or not wait_ready(
                url, [m.name for m in models], ready_timeout_s
            ):
                raise RuntimeError(f"{url}: not ready after {ready_timeout_s:.0f} s")
            if on_ready is not None:
                on_ready(url)
            triton.serve()
        except KeyboardInterrupt:
            pass
        finally:
            triton.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the command -------------------------------------------------------------------------------


def _libpython_dir() -> str | None:
    """The running interpreter's LIBDIR when it is built shared (the folder of its libpython)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not soname:
        return None
    return str(libdir) if (Path(libdir) / str(soname)).exists() else None


def _reexec_with_libpython() -> None:
    """PyTriton's Python backend stub loads libpython through the library path; a libpython of
    another build of the same version (e.g. Debian's next to a pyenv Python) fails with
    `'_thread.RLock' object has no attribute '_recursion_count'`. Re-executes this command with the
    interpreter's LIBDIR first on LD_LIBRARY_PATH (the loader reads it only at process start)."""
    libdir = _libpython_dir()
    if libdir is None or os.environ.get(_REEXEC_ENV):
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir in current.split(":"):
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = libdir + (":" + current if current else "")
    env[_REEXEC_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execve(sys.executable, argv, env)


def _pytriton_usable() -> str | None:
    """Why PyTriton cannot serve from this interpreter (None: it can)."""
    if importlib.util.find_spec("pytriton") is None:
        return "pytriton is not installed"
    if int(np.__version__.split(".")[0]) >= 2:
        # pytriton 0.7.0's Python backend stub reads numpy 2 arrays wrongly (zeros in, nothing out).
        return f"pytriton needs numpy<2, this interpreter has numpy {np.__version__}"
    return None


def _delegate(args: Sequence[str]) -> None:
    """Re-executes this command under the interpreter of requirements/triton.txt's venv
    ($WAM_TRITON_PYTHON, else <repo>/.prefix-triton/bin/python) when this one cannot serve, so
    that callers in the project's main environment can just run it."""
    why = _pytriton_usable()
    if why is None:
        return
    target = os.environ.get("WAM_TRITON_PYTHON") or str(REPO / ".prefix-triton" / "bin" / "python")
    if os.environ.get(_DELEGATED_ENV) or not Path(target).is_file():
        raise SystemExit(
            f"triton_serve: {why} ({sys.executable}); run scripts/setup.sh (it makes .prefix-triton "
            "from requirements/triton.txt) or set WAM_TRITON_PYTHON to such an interpreter"
        )
    env = dict(os.environ)
    env[_DELEGATED_ENV] = "1"
    # The target imports this package from the same place.
    package_root = str(Path(__file__).resolve().parents[1])
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = package_root + (":" + path if path else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(target, [target, "-m", "wam_export.triton_serve", *args], env)


def _private_stdout() -> TextIO:
    """A private handle on stdout for the ready line; fd 1 itself (pytriton prints the
    tritonserver log there, children inherit it) is pointed at stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wam_export.triton_serve",
        description="Serve a Triton model repository of ONNX models with ONNX Runtime in PyTriton.",
    )
    parser.add_argument(
        "repo", type=Path, help="model repository (<name>/config.pbtxt, <name>/1/model.onnx)"
    )
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (0: a free one)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: a free one)")
    parser.add_argument("--metrics-port", type=int, default=0, help="metrics port (0: a free one)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for ready"
    )
    parser.add_argument(
        "--verbose", "-v", action="count", default=0, help="pytriton/tritonserver logs"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    _delegate(argv)
    _reexec_with_libpython()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="triton_serve: %(levelname)s %(name)s: %(message)s",
    )
    try:
        models = load_repository(args.repo, args.threads)  # errors before anything starts
    except ValueError as e:
        print(f"triton_serve: {e}", file=sys.stderr)
        return 2
    ready_out = _private_stdout()

    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_ready(url: str) -> None:
        if not stopping.is_set():
            ready_out.write(f"ready {url}\n")
            ready_out.flush()

    try:
        serve(
            args.repo,
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            address=args.address,
            threads=args.threads,
            log_verbose=max(args.verbose - 1, 0),
            ready_timeout_s=args.ready_timeout,
            on_ready=on_ready,
            models=models,
        )
    except KeyboardInterrupt:
        pass
    except ValueError as e:
        print(f"triton_serve: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (pytriton start-up errors: timeouts, server errors)
        if stopping.is_set():
            return 0
        print(f"triton_serve: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if not stopping.is_set():
        print("triton_serve: tritonserver ended by itself", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
