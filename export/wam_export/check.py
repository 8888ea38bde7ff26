"""`wam_policy_node check <bundle>`: the node's own verdict on a bundle (manifest against the ONNX
stages), when the binary is at hand: an explicit path, $WAM_NODE, or target/{release,debug} of this
repository. No torch."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeCheck", "find_node", "node_check"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class NodeCheck:
    binary: Path
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def find_node(binary: Path | str | None = None) -> Path | None:
    """The node binary: `binary`, else $WAM_NODE, else this repository's target/release or debug."""
    for cand in (binary, os.environ.get("WAM_NODE")):
        if cand:
            p = Path(cand)
            return p if p.is_file() else None
    for sub in ("release", "debug"):
        p = REPO / "target" / sub / "wam_policy_node"
        if p.is_file():
            return p
    return None


def node_check(
    bundle: Path, binary: Path | str | None = None, timeout: float = 120.0
) -> NodeCheck | None:
    """Runs `<node> check <bundle>`; None when no binary is found."""
    node = find_node(binary)
    if node is None:
        return None
    cmd = [str(node), "check", str(bundle)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    env_sh = REPO / "scripts" / "env.sh"
    if "error while loading shared libraries" in r.stderr and env_sh.is_file():
        # the node links ROS 2's libraries: run it in this repository's prefix environment
        line = f'source "{env_sh}" && exec "$@"'
        r = subprocess.run(
            ["bash", "-c", line, "wam_check", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return NodeCheck(node, r.returncode, (r.stdout + r.stderr).strip())
