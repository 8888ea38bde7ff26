"""The wam_policy node as a child process with its own params file, domain and stderr log."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

# One params-file writer for the tests and the closed-loop tools (sim/ is on PYTHONPATH).
from wam_eval.procs import params_yaml

from .expected import BUNDLE_JOINTS

__all__ = ["REPO", "TEST_BUNDLE", "WIDE_LIMITS", "node_binary", "params_yaml", "NodeProcess"]

REPO = Path(__file__).resolve().parents[2]
TEST_BUNDLE = REPO / "models" / "wam_test"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Joint limits so wide that they change no command of the test bundle: the node refuses to start
#: without limits (unless dry_run), so the defaults carry these.
WIDE_LIMITS: Mapping[str, Any] = {
    "joint_names": list(BUNDLE_JOINTS),
    "joint_limits.lower": [-100.0] * len(BUNDLE_JOINTS),
    "joint_limits.upper": [100.0] * len(BUNDLE_JOINTS),
    "joint_limits.max_velocity": [1000.0] * len(BUNDLE_JOINTS),
    "joint_limits.max_jump": 100.0,
}
#: Parameters that give the node its limits: when ``params`` set one, none of the default
#: ``joint_limits.*`` are added (a partial or URDF-based set stays as the test wrote it).
_LIMIT_SOURCES = (
    "joint_limits.lower",
    "joint_limits.upper",
    "joint_limits.max_velocity",
    "robot_description",
)


def node_binary() -> Path:
    """WAM_NODE_BIN, or the release build of this checkout."""
    env = os.environ.get("WAM_NODE_BIN")
    if env:
        return Path(env)
    return REPO / "target" / "release" / "wam_policy_node"


class NodeProcess:
    """Runs ``wam_policy_node --ros-args --params-file <tmp>/params.yaml`` in domain
    ``domain_id``. Use as a context manager; the process is terminated (SIGINT, then SIGKILL) on
    exit and its temporary folder (params file and log) removed, so read ``stderr`` inside the
    ``with`` block.

    ``params`` are merged over defaults that point at the test bundle on the CPU provider, with
    :data:`WIDE_LIMITS` for the bundle's joints. The default ``joint_limits.*`` are left out when
    ``params`` set limits of their own (``joint_limits.lower``, ``upper``, ``max_velocity`` or
    ``robot_description``); a parameter whose value is None is left out altogether (so
    ``{"joint_limits.lower": None, ...}`` starts the node without limits).

    ``namespace`` (e.g. "/arm1") starts the node in that namespace (``-r __ns:=<namespace>``): its
    private names become /arm1/wam_policy/..., relative topic names /arm1/<topic>. The params file
    then addresses every node (``/**``), since a plain node name does not match a node once it is
    namespaced in rclcpp/rclpy.
    """

    DEFAULTS: Mapping[str, Any] = {
        "bundle_path": str(TEST_BUNDLE),
        "providers": ["cpu"],
        "warmup_runs": 1,
        **WIDE_LIMITS,
    }

    def __init__(
        self,
        params: Mapping[str, Any],
        domain_id: int,
        *,
        binary: Path | None = None,
        rust_log: str = "info",
        extra_env: Mapping[str, str] | None = None,
        use_defaults: bool = True,
        namespace: str | None = None,
    ) -> None:
        merged: dict[str, Any] = dict(self.DEFAULTS) if use_defaults else {}
        if use_defaults and any(k in params for k in _LIMIT_SOURCES):
            for k in WIDE_LIMITS:
                if k.startswith("joint_limits."):
                    merged.pop(k, None)
        merged.update(params)
        self.params: dict[str, Any] = {k: v for k, v in merged.items() if v is not None}
        self.domain_id = domain_id
        self.binary = binary or node_binary()
        self.rust_log = rust_log
        self.extra_env = dict(extra_env or {})
        self.namespace = "/" + namespace.strip("/") if namespace else None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: IO[bytes] | None = None

    # ---------------------------------------------------------------------------------------------
    @property
    def node_name(self) -> str:
        """The node's fully qualified name: /wam_policy, or /<namespace>/wam_policy."""
        return f"{self.namespace or ''}/wam_policy"

    @property
    def params_file(self) -> Path:
        assert self._dir is not None, "not started"
        return self._dir / "params.yaml"

    @property
    def stderr_path(self) -> Path:
        assert self._dir is not None, "not started"
        return self._dir / "stderr.log"

    def start(self) -> NodeProcess:
        if not self.binary.exists():
            raise FileNotFoundError(
                f"node binary {self.binary} not found: run `cargo build --release` or set "
                "WAM_NODE_BIN"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="wam_node_"))
        if self.namespace is None:
            self.params_file.write_text(params_yaml(self.params))
        else:
            self.params_file.write_text(params_yaml(self.params, node_name="/**"))
        env = dict(os.environ)
        env.update(
            {
                "ROS_DOMAIN_ID": str(self.domain_id),
                "RUST_LOG": self.rust_log,
                "NO_COLOR": "1",
                "RUST_BACKTRACE": "1",
            }
        )
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        env.update(self.extra_env)
        self._stderr_file = open(self.stderr_path, "wb")
        ros_args = ["--params-file", str(self.params_file)]
        if self.namespace is not None:
            ros_args = ["-r", f"__ns:={self.namespace}", *ros_args]
        self._proc = subprocess.Popen(
            [str(self.binary), "--ros-args", *ros_args],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=self._stderr_file,
            env=env,
            cwd=self._dir,
        )
        return self

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()

    def cleanup(self) -> None:
        """Removes the params file and the log (read ``stderr`` before)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while running."""
        return self._proc.poll() if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit; raises subprocess.TimeoutExpired."""
        assert self._proc is not None, "not started"
        return self._proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        """Everything the node wrote (stdout and stderr), ANSI colours stripped."""
        if self._dir is None or not self.stderr_path.exists():
            return ""
        if self._stderr_file is not None:
            self._stderr_file.flush()
        text = self.stderr_path.read_bytes().decode("utf-8", errors="replace")
        return _ANSI.sub("", text)

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr.splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float) -> bool:
        """Waits until ``needle`` appears in the node's output (or the node exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr:
                return True
            if not self.running():
                return needle in self.stderr
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 5.0) -> int | None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        return proc.returncode if proc is not None else None
