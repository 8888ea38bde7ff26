"""Static checks of launch/*.launch.py (``launch`` and ``launch_ros`` have no wheels here, so the
files are read with ``ast``, never run): every declared argument is used and every used one
declared, robot.launch.py has the documented arguments and passes ``managed`` and ``rviz`` on,
every node either file starts is in the ``namespace`` argument's namespace, and robot.launch.py's
rviz uses config/wam_policy.rviz.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
FILES = ("robot.launch.py", "sim.launch.py")
RVIZ_CONFIG = REPO / "config" / "wam_policy.rviz"
ROBOT_ARGUMENTS = {
    "namespace",
    "params_file",
    "bundle",
    "use_sim_time",
    "transport_profile",
    "controller",
    "managed",
    "rviz",
}


def tree_of(name: str) -> ast.Module:
    path = LAUNCH / name
    return ast.parse(path.read_text(), filename=str(path))


def called(call: ast.Call) -> str:
    """The name a call calls: ``f`` of ``f(...)`` or ``module.f(...)``."""
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def calls(tree: ast.AST, func: str) -> list[ast.Call]:
    """Every call of ``func`` in ``tree`` (``tree`` itself included)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and called(n) == func]


def first_string(call: ast.Call, keyword: str = "name") -> str | None:
    """The call's first positional argument, or its ``keyword`` argument, when a string literal."""
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    for kw in call.keywords:
        if kw.arg == keyword and isinstance(kw.value, ast.Constant):
            value = kw.value.value
            return value if isinstance(value, str) else None
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def is_configuration(node: ast.AST | None, name: str) -> bool:
    """``node`` is ``LaunchConfiguration("<name>")``."""
    return (
        isinstance(node, ast.Call)
        and called(node) == "LaunchConfiguration"
        and first_string(node, "variable_name") == name
    )


def executable(node: ast.Call) -> str | None:
    value = keyword(node, "executable")
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def declared(tree: ast.AST) -> list[str]:
    names = [first_string(c) for c in calls(tree, "DeclareLaunchArgument")]
    assert None not in names, "a DeclareLaunchArgument whose name is not a literal"
    return [n for n in names if n is not None]


def configured(tree: ast.AST) -> set[str]:
    names = {first_string(c, "variable_name") for c in calls(tree, "LaunchConfiguration")}
    assert None not in names, "a LaunchConfiguration whose name is not a literal"
    return {n for n in names if n is not None}


# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_launch_file_compiles(name: str) -> None:
    path = LAUNCH / name
    compile(path.read_text(), str(path), "exec")
    funcs = [n.name for n in ast.walk(tree_of(name)) if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs


@pytest.mark.parametrize("name", FILES)
def test_every_declared_argument_is_used_and_every_used_one_declared(name: str) -> None:
    tree = tree_of(name)
    args = declared(tree)
    assert len(args) == len(set(args)), f"declared twice: {args}"
    used = configured(tree)
    assert set(args) - used == set(), f"declared but never used: {sorted(set(args) - used)}"
    assert used - set(args) == set(), f"used but never declared: {sorted(used - set(args))}"


def test_robot_launch_declares_its_arguments() -> None:
    args = set(declared(tree_of("robot.launch.py")))
    assert ROBOT_ARGUMENTS <= args, f"missing: {sorted(ROBOT_ARGUMENTS - args)}"


def test_sim_launch_declares_a_namespace() -> None:
    assert "namespace" in declared(tree_of("sim.launch.py"))


@pytest.mark.parametrize("name", FILES)
def test_every_node_is_in_the_namespace(name: str) -> None:
    tree = tree_of(name)
    nodes = calls(tree, "Node")
    assert nodes, "no Node"
    for node in nodes:
        assert is_configuration(keyword(node, "namespace"), "namespace"), (
            f"line {node.lineno}: Node without namespace=LaunchConfiguration('namespace')"
        )
    # A process started otherwise must be namespaced by hand.
    for proc in calls(tree, "ExecuteProcess"):
        literals = [n.value for n in ast.walk(proc) if isinstance(n, ast.Constant)]
        assert any(isinstance(v, str) and "__ns:=" in v for v in literals), (
            f"line {proc.lineno}: ExecuteProcess without a namespace"
        )


def test_robot_launch_passes_managed_to_the_node() -> None:
    tree = tree_of("robot.launch.py")
    policy = [n for n in calls(tree, "Node") if executable(n) == "wam_policy_node"]
    assert len(policy) == 1, "one wam_policy_node"
    # {"managed": LaunchConfiguration("managed")}, possibly wrapped (e.g. in a ParameterValue).
    values = [
        v
        for d in ast.walk(policy[0])
        if isinstance(d, ast.Dict)
        for k, v in zip(d.keys, d.values)
        if isinstance(k, ast.Constant) and k.value == "managed"
    ]
    assert any(
        is_configuration(c, "managed") for v in values for c in calls(v, "LaunchConfiguration")
    ), "the node's parameters do not set managed from LaunchConfiguration('managed')"


def test_robot_launch_starts_rviz_with_the_config_when_asked() -> None:
    tree = tree_of("robot.launch.py")
    rviz = [n for n in calls(tree, "Node") if executable(n) == "rviz2"]
    assert len(rviz) == 1, "one rviz2 Node"
    condition = keyword(rviz[0], "condition")
    assert isinstance(condition, ast.Call) and called(condition) == "IfCondition", "no IfCondition"
    assert is_configuration(condition.args[0] if condition.args else None, "rviz"), (
        "rviz2 is not conditioned on LaunchConfiguration('rviz')"
    )
    literals = {n.value for n in ast.walk(rviz[0]) if isinstance(n, ast.Constant)}
    assert "-d" in literals and "wam_policy.rviz" in literals, sorted(map(str, literals))
    assert "config" in literals, "the rviz config is not taken from the package's config/"


def test_rviz_config_is_a_valid_rviz_file() -> None:
    if not RVIZ_CONFIG.exists():
        pytest.skip(f"{RVIZ_CONFIG} not written yet")
    config = yaml.safe_load(RVIZ_CONFIG.read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert isinstance(displays, list) and displays
    assert "wam_policy.rviz" in (LAUNCH / "robot.launch.py").read_text()
