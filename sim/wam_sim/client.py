"""Synchronous calls of the sim node's episode services from any rclpy node."""

from __future__ import annotations

import time
from collections.abc import Mapping

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

from wam_policy.srv import GetEpisodeResult, ResetEpisode

from .perturb import Perturbation


def perturbation_parameters(perturbation: Perturbation | None) -> list[ParameterMsg]:
    """The sim node's parameters that make ``perturbation`` (None: none) the option of the
    episodes started from then on (ResetEpisode has no field for it)."""
    if perturbation is None:
        return [Parameter("perturbation", value="").to_parameter_msg()]
    out = [
        Parameter("perturbation", value=perturbation.kind).to_parameter_msg(),
        Parameter("perturbation_time_s", value=float(perturbation.time_s)).to_parameter_msg(),
    ]
    if perturbation.camera:
        out.append(Parameter("perturbation_camera", value=perturbation.camera).to_parameter_msg())
    return out


class EpisodeClient:
    """Calls ``<sim>/reset_episode`` and ``<sim>/episode_result`` with a timeout.

    ``spin=True``: the call spins ``node`` itself (the node must not be spun elsewhere).
    ``spin=False``: another thread spins the node; the call only waits for the answer.
    """

    def __init__(
        self, node: Node, sim_node: str = "/wam_sim", timeout_s: float = 10.0, spin: bool = True
    ) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self.spin = spin
        self._reset = node.create_client(ResetEpisode, f"{sim_node}/reset_episode")
        self._result = node.create_client(GetEpisodeResult, f"{sim_node}/episode_result")
        self._params = node.create_client(SetParameters, f"{sim_node}/set_parameters")

    def wait_for_services(self, timeout_s: float | None = None) -> bool:
        """True once both services are available."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        end = time.monotonic() + limit
        for c in (self._reset, self._result):
            if not c.wait_for_service(timeout_sec=max(0.0, end - time.monotonic())):
                return False
        return True

    def reset(self, seed: int, instruction: str = "") -> ResetEpisode.Response:
        """Starts an episode; raises TimeoutError when no answer comes in time."""
        request = ResetEpisode.Request(seed=int(seed), instruction=instruction)
        return self._call(self._reset, request)

    def result(self) -> GetEpisodeResult.Response:
        """The running episode's state; raises TimeoutError when no answer comes in time."""
        return self._call(self._result, GetEpisodeResult.Request())

    def set_parameters(self, values: Mapping[str, object]) -> list[str]:
        """Sets parameters of the sim node; returns the reasons of those refused ("" if set)."""
        msgs = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        res = self._call(self._params, SetParameters.Request(parameters=msgs))
        return ["" if r.successful else r.reason or "refused" for r in res.results]

    def set_perturbation(self, perturbation: Perturbation | None) -> None:
        """Makes ``perturbation`` the option of the next episodes; ValueError if refused."""
        request = SetParameters.Request(parameters=perturbation_parameters(perturbation))
        res = self._call(self._params, request)
        refused = [r.reason for r in res.results if not r.successful]
        if refused:
            raise ValueError(f"perturbation {perturbation} refused: {refused}")

    def _call(self, client, request):  # type: ignore[no-untyped-def]
        end = time.monotonic() + self.timeout_s
        if not client.wait_for_service(timeout_sec=self.timeout_s):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        if self.spin:
            rclpy.spin_until_future_complete(
                self.node, future, timeout_sec=max(0.0, end - time.monotonic())
            )
        else:
            while not future.done() and time.monotonic() < end:
                time.sleep(0.005)
        if not future.done():
            client.remove_pending_request(future)
            raise TimeoutError(f"no answer from {client.srv_name} in {self.timeout_s} s")
        result = future.result()
        if result is None:
            raise RuntimeError(f"{client.srv_name} failed: {future.exception()}")
        return result
