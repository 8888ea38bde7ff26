"""wam_eval: the wam_policy node binary in closed loop with the wam_sim node.

- ``harness``: starts both nodes as subprocesses and runs episodes through their services.
- ``python -m wam_eval.closed_loop``: success rates of the WAM, the action-only baseline and the
  expert, with control figures (models/wam_sim/eval/closed_loop.json, models/README.md).
- ``python -m wam_eval.exec_bench``: boundary modes x extra latency (README.md, out/).
- ``python -m wam_eval.demo``: ``make demo``, episodes and predicted-vs-actual pictures.
"""

from .stats import (
    boundary_velocity_jumps,
    follower_metrics,
    markdown_table,
    percentiles,
    replace_between_markers,
    wilson_interval,
)

__all__ = [
    "boundary_velocity_jumps",
    "follower_metrics",
    "markdown_table",
    "percentiles",
    "replace_between_markers",
    "wilson_interval",
]
