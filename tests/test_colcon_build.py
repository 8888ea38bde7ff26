"""Builds the package with colcon in a fresh workspace, as a ROS user would, and checks the installed tree.

Needs the prefix of scripts/setup.sh (ROS 2 Jazzy wheels, colcon, cargo); skipped without it.
Environment:
  WAM_COLCON_TEST_NODE=0   configure with -DWAM_BUILD_NODE=OFF and check the messages only.
  WAM_COLCON_TEST_TARGET   cargo target dir of the node build (default tests/.work/colcon_cargo_target,
                           kept between runs so that a second run does not compile every crate again).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFIX = REPO / ".prefix"
MSGS_PREFIX = PREFIX / "wam_msgs"
WORK = REPO / "tests" / ".work"
# Top-level entries of the checkout that are not package sources.
# Build outputs and git-ignored local state (the training venv and the training data are gigabytes on a
# developer's machine and play no part in the package).
EXCLUDED = {".git", ".prefix", ".prefix-train", "target", "build", "install", "log", "out", ".ci", "docker"}
EXCLUDED_IN_MODELS = {".data"}
BUILD_TIMEOUT_S = 40 * 60
PATH_VARS = ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH")


def _build_node() -> bool:
    return os.environ.get("WAM_COLCON_TEST_NODE", "1") != "0"


def _prefix_env() -> dict[str, str]:
    """The environment of scripts/env.sh, less this package's messages from the prefix.

    The messages must come from the workspace's own install, so .prefix/wam_msgs is taken out
    of every search path.
    """
    out = subprocess.run(
        ["bash", "-c", f'source "{REPO / "scripts" / "env.sh"}" >/dev/null && env -0'],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    env: dict[str, str] = {}
    for item in out.split("\0"):
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
    for var in PATH_VARS:
        parts = [p for p in env.get(var, "").split(":") if p and not p.startswith(str(MSGS_PREFIX))]
        env[var] = ":".join(parts)
    return env


def _copy_sources(dest: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n in {"__pycache__", ".work", ".pytest_cache"}}
        if Path(directory).resolve() == REPO:
            ignored |= {n for n in names if n in EXCLUDED}
        if Path(directory).resolve() == REPO / "models":
            ignored |= {n for n in names if n in EXCLUDED_IN_MODELS}
        return ignored

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def colcon_install() -> Iterator[tuple[Path, dict[str, str]]]:
    """Runs `colcon build` once in a fresh workspace; yields (install dir, build environment)."""
    if not (PREFIX / "bin" / "colcon").exists():
        pytest.skip("no ROS prefix with colcon: run scripts/setup.sh first")
    env = _prefix_env()
    if _build_node() and shutil.which("cargo", path=env.get("PATH")) is None:
        pytest.skip("cargo not on PATH: the node part needs a Rust toolchain")

    # A fixed path under tests/.work (git-ignored), emptied first: r2r caches its bindings by the
    # environment, so a stable install path lets a kept cargo target dir be reused.
    ws = WORK / "colcon_ws"
    if ws.exists():
        shutil.rmtree(ws)
    (ws / "src").mkdir(parents=True)
    _copy_sources(ws / "src" / "wam_policy")

    cmake_args = ["-DBUILD_TESTING=OFF"]
    if _build_node():
        target = Path(os.environ.get("WAM_COLCON_TEST_TARGET", str(WORK / "colcon_cargo_target")))
        cmake_args.append(f"-DWAM_CARGO_TARGET_DIR={target}")
    else:
        cmake_args.append("-DWAM_BUILD_NODE=OFF")

    cmd = [
        "colcon",
        "--log-base", str(ws / "log"),
        "build",
        "--base-paths", str(ws / "src"),
        "--build-base", str(ws / "build"),
        "--install-base", str(ws / "install"),
        "--event-handlers", "console_cohesion+", "parallel_status-",
        "--cmake-args", *cmake_args,
    ]
    proc = subprocess.run(
        cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, (
        f"colcon build failed ({proc.returncode}):\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
    )
    yield ws / "install", env


def test_package_is_identified_as_ament_cmake(colcon_install: tuple[Path, dict[str, str]]) -> None:
    install, _ = colcon_install
    marker = install / "wam_policy" / "share" / "colcon-core" / "packages" / "wam_policy"
    assert marker.exists(), f"colcon did not install wam_policy ({marker} missing)"
    assert (install / "wam_policy" / "share" / "wam_policy" / "package.xml").is_file()
    index = install / "wam_policy" / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / "wam_policy").is_file()
    interfaces = (index / "rosidl_interfaces" / "wam_policy").read_text()
    assert "msg/ActionChunk.msg" in interfaces
    assert "action/Run.action" in interfaces


def test_share_directories_installed(colcon_install: tuple[Path, dict[str, str]]) -> None:
    install, _ = colcon_install
    share = install / "wam_policy" / "share" / "wam_policy"
    for name in ("launch", "config", "models"):
        assert (share / name).is_dir(), f"{share / name} missing"
    for msg in ("ActionChunk", "PolicyStatus"):
        assert (share / "msg" / f"{msg}.msg").is_file()
        assert (share / "msg" / f"{msg}.idl").is_file()
    for srv in ("ResetEpisode", "GetEpisodeResult"):
        assert (share / "srv" / f"{srv}.srv").is_file()
    assert (share / "action" / "Run.action").is_file()
    assert (share / "config" / "wam_policy.rviz").is_file()


def test_message_libraries_installed(colcon_install: tuple[Path, dict[str, str]]) -> None:
    install, _ = colcon_install
    lib = install / "wam_policy" / "lib"
    for kind in ("rosidl_generator_c", "rosidl_typesupport_c", "rosidl_typesupport_fastrtps_c",
                 "rosidl_typesupport_introspection_c", "rosidl_generator_py"):
        assert (lib / f"libwam_policy__{kind}.so").is_file(), f"libwam_policy__{kind}.so missing"


def test_messages_import_from_install(colcon_install: tuple[Path, dict[str, str]]) -> None:
    install, env = colcon_install
    code = (
        "import wam_policy.msg as m\n"
        "from wam_policy.msg import ActionChunk, PolicyStatus\n"
        "from wam_policy.action import Run\n"
        "assert Run.Result.OUTCOME_CLIENT_LOST == 7\n"
        "c = ActionChunk(model_id='x', denoise_steps=4)\n"
        "assert PolicyStatus.STATE_RUNNING == 2\n"
        "print(m.__file__)\n"
    )
    script = f'source "{install / "setup.bash"}" && exec python -c "$0"'
    proc = subprocess.run(
        ["bash", "-c", script, code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"import failed:\n{proc.stdout}\n{proc.stderr}"
    assert str(install) in proc.stdout, f"wam_policy.msg not imported from the install: {proc.stdout}"


def test_node_installed(colcon_install: tuple[Path, dict[str, str]]) -> None:
    if not _build_node():
        pytest.skip("WAM_COLCON_TEST_NODE=0: node not built")
    install, _ = colcon_install
    node = install / "wam_policy" / "lib" / "wam_policy" / "wam_policy_node"
    assert node.is_file(), f"{node} missing"
    assert os.access(node, os.X_OK), f"{node} is not executable"
