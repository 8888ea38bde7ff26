"""Synchronous calls of the sim node's episode services from any rclpy node."""

from __future__ import annotations

import time

import rclpy
from rclpy.node import Node

from wam_policy.srv import GetEpisodeResult, ResetEpisode


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
