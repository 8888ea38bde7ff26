"""Child processes of a closed-loop run: the wam_sim node and the wam_policy node binary.

Both run in their own ROS_DOMAIN_ID with discovery limited to the local host; their output goes
to a log file in a temporary folder so that a failure can be reported with the tail of both logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

__all__ = [
    "REPO",
    "SIM_POLICY_YAML",
    "ManagedProcess",
    "load_node_params",
    "node_binary",
    "params_yaml",
    "policy_process",
    "sim_process",
]

REPO = Path(__file__).resolve().parents[2]
SIM_POLICY_YAML = REPO / "config" / "sim_policy.yaml"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def node_binary() -> Path:
    """WAM_NODE_BIN, or the release build of this checkout."""
    env = os.environ.get("WAM_NODE_BIN")
    return Path(env) if env else REPO / "target" / "release" / "wam_policy_node"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_node_params(path: Path = SIM_POLICY_YAML, node_name: str = "wam_policy") -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 params file, dotted names flattened."""
    tree = yaml.safe_load(path.read_text())
    try:
        params = tree[node_name]["ros__parameters"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: no {node_name}.ros__parameters") from e
    return _flatten(params)


def _yaml_value(value: Any) -> str:
    """A YAML flow value; floats keep a decimal point so that ROS reads them as doubles."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} as a parameter")


def params_yaml(params: Mapping[str, Any], node_name: str = "wam_policy") -> str:
    """A ROS 2 params file for ``node_name``; dotted names become nested maps."""
    tree: dict[str, Any] = {}
    for name, value in params.items():
        parts = name.split(".")
        level = tree
        for part in parts[:-1]:
            level = level.setdefault(part, {})
        level[parts[-1]] = value
    lines = [f"{node_name}:", "  ros__parameters:"]

    def emit(level: Mapping[str, Any], indent: int) -> None:
        for key, value in level.items():
            if isinstance(value, Mapping):
                lines.append(" " * indent + f"{key}:")
                emit(value, indent + 2)
            else:
                lines.append(" " * indent + f"{key}: {_yaml_value(value)}")

    emit(tree, 4)
    return "\n".join(lines) + "\n"


class ManagedProcess:
    """A child process in domain ``domain_id`` whose output goes to ``<tmp>/<name>.log``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        domain_id: int,
        workdir: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.domain_id = domain_id
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.extra_env = dict(extra_env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        env = dict(os.environ)
        env.update(
            {
                "ROS_DOMAIN_ID": str(self.domain_id),
                "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "NO_COLOR": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        return self

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while running."""
        return self._proc.poll() if self._proc else None

    def output(self) -> str:
        """Everything the process wrote so far, ANSI colours stripped."""
        if self._log is not None:
            self._log.flush()
        if not self.log_path.exists():
            return ""
        return _ANSI.sub("", self.log_path.read_bytes().decode("utf-8", errors="replace"))

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the output, indented, with a header."""
        body = "\n".join("    " + line for line in self.output().splitlines()[-lines:])
        state = "running" if self.running() else f"exited with {self.returncode}"
        return f"--- {self.name} ({state}), last {lines} lines of {self.log_path}:\n{body}"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode if proc is not None else None


def sim_process(
    domain_id: int, workdir: Path, params: Mapping[str, Any] | None = None
) -> ManagedProcess:
    """``python -m wam_sim.node`` with ``-p name:=value`` parameters (not started)."""
    args = [sys.executable, "-m", "wam_sim.node", "--ros-args"]
    for k, v in (params or {}).items():
        args += ["-p", f"{k}:={_yaml_value(v)}"]
    pythonpath = os.pathsep.join(
        p for p in (str(REPO / "sim"), os.environ.get("PYTHONPATH", "")) if p
    )
    return ManagedProcess("wam_sim", args, domain_id, workdir, {"PYTHONPATH": pythonpath})


def policy_process(
    domain_id: int,
    workdir: Path,
    params: Mapping[str, Any],
    binary: Path | None = None,
    rust_log: str = "info",
) -> ManagedProcess:
    """The wam_policy node binary with ``params`` written to ``<workdir>/policy_params.yaml``."""
    binary = binary or node_binary()
    if not binary.exists():
        raise FileNotFoundError(
            f"node binary {binary} not found: run `cargo build --release` (after "
            "`source scripts/env.sh`) or set WAM_NODE_BIN"
        )
    params_file = workdir / "policy_params.yaml"
    params_file.write_text(params_yaml(params))
    args = [str(binary), "--ros-args", "--params-file", str(params_file)]
    return ManagedProcess(
        "wam_policy", args, domain_id, workdir, {"RUST_LOG": rust_log, "RUST_BACKTRACE": "1"}
    )


def make_workdir(prefix: str = "wam_eval_") -> Path:
    """A fresh temporary folder for logs and params files."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_workdir(path: Path) -> None:
    """Removes a folder made by ``make_workdir``."""
    shutil.rmtree(path, ignore_errors=True)
