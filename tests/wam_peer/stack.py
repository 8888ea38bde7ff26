"""Clients of the node's issue-12 interfaces for the real-graph tests: the ``~/run`` action
(:class:`RunClient`), the lifecycle services (:class:`LifecycleClient`), the parameter services
(:class:`ParamClient`), an action client in a process of its own that a test can SIGKILL
(:class:`ExternalRunClient`), any topic (:class:`TopicLog`), and the topic names of a node in a
namespace (:func:`namespaced_topics`).

Every client lives on a :class:`~wam_peer.Peer`'s node (``peer.node``), whose executor spins in the
peer's thread: the calls here block the test's thread on events the executor sets, never spin.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from action_msgs.msg import GoalStatus
from action_msgs.srv import CancelGoal
from lifecycle_msgs.msg import State, Transition, TransitionDescription, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
from rcl_interfaces.msg import (
    ParameterDescriptor,
    ParameterEvent,
    SetParametersResult,
)
from rcl_interfaces.srv import (
    DescribeParameters,
    GetParameters,
    GetParameterTypes,
    ListParameters,
    SetParameters,
    SetParametersAtomically,
)
from rclpy.action import ActionClient
from rclpy.action.client import ClientGoalHandle
from rclpy.client import Client
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from wam_policy.action import Run

from .peer import Peer, PeerTopics, Received

__all__ = [
    "ANY_RELIABILITY",
    "GOAL_STATUS_NAMES",
    "LEASE_S",
    "LifecycleClient",
    "ParamClient",
    "RunClient",
    "RunEnd",
    "RunGoal",
    "ExternalRunClient",
    "TopicLog",
    "call",
    "namespaced_topics",
    "relative_topic_params",
    "short_lease_profile",
    "wait_future",
]

T = TypeVar("T")

#: action_msgs/GoalStatus codes by name, for messages.
GOAL_STATUS_NAMES: Mapping[int, str] = {
    GoalStatus.STATUS_UNKNOWN: "UNKNOWN",
    GoalStatus.STATUS_ACCEPTED: "ACCEPTED",
    GoalStatus.STATUS_EXECUTING: "EXECUTING",
    GoalStatus.STATUS_CANCELING: "CANCELING",
    GoalStatus.STATUS_SUCCEEDED: "SUCCEEDED",
    GoalStatus.STATUS_CANCELED: "CANCELED",
    GoalStatus.STATUS_ABORTED: "ABORTED",
}


def wait_future(future: Future, timeout: float, what: str) -> Any:
    """The result of ``future`` (completed by the peer's executor); TimeoutError after
    ``timeout`` seconds."""
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"{what}: no answer in {timeout} s")
    return future.result()


def call(client: Client, request: Any, timeout: float) -> Any:
    """One service call: waits for the service (``timeout``), then for the answer (``timeout``)."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {client.srv_name} not available after {timeout} s")
    future = client.call_async(request)
    try:
        return wait_future(future, timeout, f"service {client.srv_name}")
    except TimeoutError:
        client.remove_pending_request(future)
        raise


# Polling as the peer does it.
_poll = Peer.wait_for


# -------------------------------------------------------------------------------------------------
# Any topic


#: Matches reliable and best-effort publishers alike (for topics whose QoS the tests do not pin).
ANY_RELIABILITY = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


class TopicLog(Generic[T]):
    """The messages of one topic on ``node`` with their arrival time (monotonic, as
    :meth:`Peer.mark`). Default QoS reliable, depth 1000."""

    def __init__(
        self, node: Node, msg_type: type[T], topic: str, qos: QoSProfile | None = None
    ) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._items: list[Received[T]] = []
        node.create_subscription(msg_type, topic, self._on, qos or QoSProfile(depth=1000))

    def _on(self, msg: T) -> None:
        with self._lock:
            self._items.append(Received(msg, time.monotonic()))

    def received_since(self, t: float = 0.0) -> list[Received[T]]:
        with self._lock:
            return [r for r in self._items if r.at >= t]

    def since(self, t: float = 0.0) -> list[T]:
        return [r.msg for r in self.received_since(t)]

    def wait_count(self, n: int, since: float = 0.0, timeout: float = 10.0) -> list[T]:
        """At least ``n`` messages received after ``since`` (AssertionError after ``timeout``)."""
        got = _poll(lambda: len(self.since(since)) >= n, timeout)
        assert got, f"{self.topic}: {len(self.since(since))} messages in {timeout} s, not {n}"
        return self.since(since)

    def wait_for(
        self, predicate: Callable[[T], bool], timeout: float, since: float = 0.0
    ) -> T | None:
        """The first message received after ``since`` that satisfies ``predicate``."""

        def find() -> T | None:
            for m in self.since(since):
                if predicate(m):
                    return m
            return None

        return _poll(find, timeout)


# -------------------------------------------------------------------------------------------------
# ~/run


@dataclass(frozen=True)
class RunEnd:
    """How a goal ended: the action's goal status (action_msgs/GoalStatus) and the node's result."""

    status: int
    result: Run.Result

    @property
    def status_name(self) -> str:
        return GOAL_STATUS_NAMES.get(self.status, str(self.status))

    def __str__(self) -> str:
        r = self.result
        return (
            f"goal {self.status_name}, outcome {r.outcome} ({r.outcome_name}): {r.message!r}, "
            f"elapsed {r.elapsed_s:.3f} s, {r.chunks} chunks"
        )


class RunGoal:
    """One goal sent to ``~/run``: its acceptance, its feedback and, once it ended, its end."""

    def __init__(
        self,
        goal: Run.Goal,
        handle: ClientGoalHandle,
        feedback: list[Received[Run.Feedback]],
        lock: threading.Lock,
    ) -> None:
        self.goal = goal
        self.handle = handle
        self._feedback = feedback
        self._lock = lock
        self._result: Future | None = handle.get_result_async() if handle.accepted else None

    @property
    def accepted(self) -> bool:
        return bool(self.handle.accepted)

    def feedback_since(self, t: float = 0.0) -> list[Run.Feedback]:
        with self._lock:
            return [r.msg for r in self._feedback if r.at >= t]

    def wait_feedback(
        self, predicate: Callable[[Run.Feedback], bool], timeout: float, since: float = 0.0
    ) -> Run.Feedback | None:
        """The first feedback received after ``since`` that satisfies ``predicate``."""

        def find() -> Run.Feedback | None:
            for f in self.feedback_since(since):
                if predicate(f):
                    return f
            return None

        return _poll(find, timeout)

    def done(self) -> bool:
        """Whether the node has sent the goal's result."""
        return self._result is not None and self._result.done()

    def result(self, timeout: float) -> RunEnd:
        """Waits up to ``timeout`` s for the goal to end."""
        assert self._result is not None, "the goal was not accepted"
        response = wait_future(self._result, timeout, f"result of the goal {self.goal}")
        return RunEnd(int(response.status), response.result)

    def cancel(self, timeout: float = 5.0) -> CancelGoal.Response:
        response = wait_future(self.handle.cancel_goal_async(), timeout, "cancel")
        assert isinstance(response, CancelGoal.Response)
        return response


class RunClient:
    """An action client of the node's ``~/run`` (``action``, e.g. /arm1/wam_policy/run)."""

    def __init__(self, node: Node, action: str = "/wam_policy/run") -> None:
        self.node = node
        self.action = action
        self.client = ActionClient(node, Run, action)
        self._lock = threading.Lock()

    def wait_for_server(self, timeout: float = 15.0) -> bool:
        return bool(self.client.wait_for_server(timeout_sec=timeout))

    def send(
        self,
        instruction: str,
        *,
        time_budget_s: float = 0.0,
        succeed_on_timeout: bool = False,
        stale_tolerance_s: float = -1.0,
        timeout: float = 10.0,
    ) -> RunGoal:
        """Sends a goal and waits for the node's answer (accepted or rejected)."""
        if not self.wait_for_server(timeout):
            raise TimeoutError(f"action server {self.action} not available after {timeout} s")
        goal = Run.Goal(
            instruction=instruction,
            time_budget_s=float(time_budget_s),
            succeed_on_timeout=bool(succeed_on_timeout),
            stale_tolerance_s=float(stale_tolerance_s),
        )
        feedback: list[Received[Run.Feedback]] = []

        def on_feedback(message: Any) -> None:
            with self._lock:
                feedback.append(Received(message.feedback, time.monotonic()))

        future = self.client.send_goal_async(goal, feedback_callback=on_feedback)
        handle = wait_future(future, timeout, f"goal request to {self.action}")
        assert isinstance(handle, ClientGoalHandle), handle
        return RunGoal(goal, handle, feedback, self._lock)

    def destroy(self) -> None:
        self.client.destroy()


def short_lease_profile(folder: Path, lease_s: float = 2.0) -> Path:
    """A Fast DDS profile whose participants announce a lease of ``lease_s``: when a process that
    uses it is killed (no goodbye message), the others drop it from their graph after about
    ``lease_s`` instead of Fast DDS's default 20 s."""
    sec = int(lease_s)
    nanosec = int(round((lease_s - sec) * 1e9))
    announce_ns = int(lease_s / 4 * 1e9)
    path = folder / "short_lease.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">\n'
        '  <participant profile_name="short_lease" is_default_profile="true">\n'
        "    <rtps><builtin><discovery_config>\n"
        f"      <leaseDuration><sec>{sec}</sec><nanosec>{nanosec}</nanosec></leaseDuration>\n"
        "      <leaseAnnouncement>"
        f"<sec>0</sec><nanosec>{announce_ns}</nanosec></leaseAnnouncement>\n"
        "    </discovery_config></builtin></rtps>\n"
        "  </participant>\n"
        "</profiles>\n"
    )
    return path


#: The lease of :class:`ExternalRunClient`'s participant (seconds).
LEASE_S = 2.0

_CLIENT_SCRIPT = """
import sys
import rclpy
from rclpy.action import ActionClient
from wam_policy.action import Run

action, instruction = sys.argv[1], sys.argv[2]
rclpy.init()
node = rclpy.create_node("wam_external_run_client")
client = ActionClient(node, Run, action)
if not client.wait_for_server(timeout_sec=30.0):
    print("no-server", flush=True)
    sys.exit(2)
goal = Run.Goal(instruction=instruction, time_budget_s=0.0, succeed_on_timeout=False,
                stale_tolerance_s=-1.0)
future = client.send_goal_async(goal)
rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
handle = future.result()
print("accepted" if handle is not None and handle.accepted else "rejected", flush=True)
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.1)
"""


class ExternalRunClient:
    """A ``~/run`` action client in a Python process of its own (domain ``domain_id``) that sends
    one goal with ``instruction`` and then spins until killed. Its participant announces a lease
    of :data:`LEASE_S`, so that after :meth:`kill` (SIGKILL) it leaves the node's graph within
    about that time. Use as a context manager."""

    def __init__(self, domain_id: int, instruction: str, action: str = "/wam_policy/run") -> None:
        self.domain_id = domain_id
        self.instruction = instruction
        self.action = action
        self.lines: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="wam_run_client_"))
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> ExternalRunClient:
        env = dict(os.environ)
        profile = str(short_lease_profile(self._dir, LEASE_S))
        env.update(
            {
                "ROS_DOMAIN_ID": str(self.domain_id),
                "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
                "FASTDDS_DEFAULT_PROFILES_FILE": profile,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT_SCRIPT, self.action, self.instruction],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=self._dir,
        )
        stdout = self._proc.stdout
        assert stdout is not None
        self._reader = threading.Thread(target=self._read, args=(stdout,), daemon=True)
        self._reader.start()
        return self

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_line(self, words: Iterable[str], timeout: float) -> str | None:
        """The first output line that is one of ``words`` (None after ``timeout`` or an exit)."""
        wanted = set(words)

        def find() -> str | None:
            with self._lock:
                for line in self.lines:
                    if line.strip() in wanted:
                        return line.strip()
            if self._proc is not None and self._proc.poll() is not None:
                time.sleep(0.1)  # the reader may still hold the last lines
                with self._lock:
                    hits = [x.strip() for x in self.lines if x.strip() in wanted]
                return hits[0] if hits else "exited"
            return None

        found = _poll(find, timeout, 0.02)
        return None if found == "exited" else found

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL: the process ends without a word to the graph."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10.0)

    def __enter__(self) -> ExternalRunClient:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.kill()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        shutil.rmtree(self._dir, ignore_errors=True)


# -------------------------------------------------------------------------------------------------
# Lifecycle


class LifecycleClient:
    """The lifecycle services of the node ``node_name`` (e.g. /wam_policy) and its
    ``~/transition_event`` topic (recorded from construction on)."""

    def __init__(self, node: Node, node_name: str = "/wam_policy") -> None:
        self.node = node
        self.node_name = node_name
        self._change = node.create_client(ChangeState, f"{node_name}/change_state")
        self._get = node.create_client(GetState, f"{node_name}/get_state")
        self._states = node.create_client(GetAvailableStates, f"{node_name}/get_available_states")
        self._transitions = node.create_client(
            GetAvailableTransitions, f"{node_name}/get_available_transitions"
        )
        self._lock = threading.Lock()
        self.events: list[Received[TransitionEvent]] = []
        self.event_topic = f"{node_name}/transition_event"
        node.create_subscription(
            TransitionEvent, self.event_topic, self._on_event, QoSProfile(depth=100)
        )

    def _on_event(self, msg: TransitionEvent) -> None:
        with self._lock:
            self.events.append(Received(msg, time.monotonic()))

    def wait_ready(self, timeout: float = 20.0) -> bool:
        """Waits until the node serves get_state and publishes its transition events."""
        if not self._get.wait_for_service(timeout_sec=timeout):
            return False
        ok = _poll(lambda: self.node.count_publishers(self.event_topic) > 0, timeout)
        return bool(ok)

    def state(self, timeout: float = 5.0) -> State:
        response = call(self._get, GetState.Request(), timeout)
        assert isinstance(response, GetState.Response)
        return response.current_state

    def change(self, transition: int, timeout: float = 30.0) -> bool:
        """Triggers ``transition`` (lifecycle_msgs/Transition id); the node's ``success``.
        Generous ``timeout``: configure loads and warms up the model."""
        request = ChangeState.Request(transition=Transition(id=transition))
        response = call(self._change, request, timeout)
        assert isinstance(response, ChangeState.Response)
        return bool(response.success)

    def available_states(self, timeout: float = 5.0) -> list[State]:
        response = call(self._states, GetAvailableStates.Request(), timeout)
        assert isinstance(response, GetAvailableStates.Response)
        return list(response.available_states)

    def available_transitions(self, timeout: float = 5.0) -> list[TransitionDescription]:
        response = call(self._transitions, GetAvailableTransitions.Request(), timeout)
        assert isinstance(response, GetAvailableTransitions.Response)
        return list(response.available_transitions)

    def events_since(self, t: float = 0.0) -> list[TransitionEvent]:
        with self._lock:
            return [r.msg for r in self.events if r.at >= t]

    def path_since(self, t: float = 0.0) -> list[tuple[int, int]]:
        """(start state id, goal state id) of every transition event received after ``t``."""
        return [(e.start_state.id, e.goal_state.id) for e in self.events_since(t)]

    def wait_path(
        self, path: Sequence[tuple[int, int]], since: float, timeout: float = 5.0
    ) -> list[tuple[int, int]]:
        """Waits until the events after ``since`` contain ``path`` in order (not necessarily
        adjacent); returns every (start, goal) received (check the result against ``path``)."""

        def contains() -> bool:
            got = iter(self.path_since(since))
            return all(step in got for step in path)

        _poll(contains, timeout)
        return self.path_since(since)


# -------------------------------------------------------------------------------------------------
# Parameters


class ParamClient:
    """The rcl_interfaces parameter services of the node ``node_name`` (e.g. /wam_policy) and the
    /parameter_events it publishes (recorded from construction on)."""

    def __init__(self, node: Node, node_name: str = "/wam_policy") -> None:
        self.node = node
        self.node_name = node_name
        self._list = node.create_client(ListParameters, f"{node_name}/list_parameters")
        self._get = node.create_client(GetParameters, f"{node_name}/get_parameters")
        self._types = node.create_client(GetParameterTypes, f"{node_name}/get_parameter_types")
        self._describe = node.create_client(DescribeParameters, f"{node_name}/describe_parameters")
        self._set = node.create_client(SetParameters, f"{node_name}/set_parameters")
        self._set_atomically = node.create_client(
            SetParametersAtomically, f"{node_name}/set_parameters_atomically"
        )
        self._lock = threading.Lock()
        self.events: list[Received[ParameterEvent]] = []
        node.create_subscription(
            ParameterEvent, "/parameter_events", self._on_event, QoSProfile(depth=1000)
        )

    def _on_event(self, msg: ParameterEvent) -> None:
        if msg.node == self.node_name:
            with self._lock:
                self.events.append(Received(msg, time.monotonic()))

    def changed_since(self, t: float = 0.0) -> dict[str, Any]:
        """Name -> value of every parameter the node announced as new or changed after ``t``."""
        out: dict[str, Any] = {}
        with self._lock:
            events = [r.msg for r in self.events if r.at >= t]
        for e in events:
            for p in list(e.new_parameters) + list(e.changed_parameters):
                out[p.name] = parameter_value_to_python(p.value)
        return out

    def list(self, prefixes: Sequence[str] = (), timeout: float = 5.0) -> list[str]:
        request = ListParameters.Request(prefixes=list(prefixes), depth=0)
        response = call(self._list, request, timeout)
        assert isinstance(response, ListParameters.Response)
        return list(response.result.names)

    def get(self, names: Sequence[str], timeout: float = 5.0) -> list[Any]:
        """Python values (None for a parameter that is not set)."""
        response = call(self._get, GetParameters.Request(names=list(names)), timeout)
        assert isinstance(response, GetParameters.Response)
        return [parameter_value_to_python(v) for v in response.values]

    def types(self, names: Sequence[str], timeout: float = 5.0) -> list[int]:
        """rcl_interfaces/ParameterType codes."""
        response = call(self._types, GetParameterTypes.Request(names=list(names)), timeout)
        assert isinstance(response, GetParameterTypes.Response)
        return [int(t) for t in response.types]

    def describe(self, names: Sequence[str], timeout: float = 5.0) -> list[ParameterDescriptor]:
        response = call(self._describe, DescribeParameters.Request(names=list(names)), timeout)
        assert isinstance(response, DescribeParameters.Response)
        return list(response.descriptors)

    @staticmethod
    def _messages(values: Mapping[str, Any]) -> list[Any]:
        return [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]

    def set(self, values: Mapping[str, Any], timeout: float = 5.0) -> list[SetParametersResult]:
        """One ``set_parameters`` call; one result per parameter, in order."""
        request = SetParameters.Request(parameters=self._messages(values))
        response = call(self._set, request, timeout)
        assert isinstance(response, SetParameters.Response)
        return list(response.results)

    def set_one(self, name: str, value: Any, timeout: float = 5.0) -> SetParametersResult:
        (result,) = self.set({name: value}, timeout)
        return result

    def set_atomically(
        self, values: Mapping[str, Any], timeout: float = 5.0
    ) -> SetParametersResult:
        request = SetParametersAtomically.Request(parameters=self._messages(values))
        response = call(self._set_atomically, request, timeout)
        assert isinstance(response, SetParametersAtomically.Response)
        return response.result


# -------------------------------------------------------------------------------------------------
# Namespaces


def namespaced_topics(namespace: str, cameras: Sequence[str] = ("exterior", "wrist")) -> PeerTopics:
    """The absolute names a peer uses for a node in ``namespace`` (e.g. /arm1) whose topic
    parameters are the relative ones of config/robot.yaml (:func:`relative_topic_params`)."""
    ns = "/" + namespace.strip("/")
    return PeerTopics(
        cameras={c: f"{ns}/cameras/{c}/image_raw" for c in cameras},
        joint_states=f"{ns}/joint_states",
        instruction=f"{ns}/instruction",
        trajectory=f"{ns}/joint_trajectory",
        node=f"{ns}/wam_policy",
    )


def relative_topic_params(cameras: Sequence[str] = ("exterior", "wrist")) -> dict[str, Any]:
    """Node parameters with relative topic names: they resolve in the node's namespace."""
    return {
        "camera_names": list(cameras),
        "camera_topics": [f"cameras/{c}/image_raw" for c in cameras],
        "camera_transport": "raw",
        "joint_states_topic": "joint_states",
        "instruction_topic": "instruction",
        "trajectory_topic": "joint_trajectory",
    }
