"""Chunk execution measured in the simulator: ``python -m wam_eval.exec_bench``.

For each boundary mode (replace, crossfade, prefix) and extra model latency (0, 0.1, 0.3 s through
``debug_extra_latency_s``), a fresh node drives the sim for K episodes (mixed task families, fixed
seeds, the same for every cell) and the bench records: idle time (the node's ``idle_time_s`` and
the follower's time with nothing to follow), the largest velocity jump at chunk boundaries (the
node's metric, recomputed from the published trajectories, and the follower's largest change of
desired velocity between 5 ms ticks), and the success rate. Prints a table, writes it into
README.md between ``<!-- exec-bench:begin -->`` and ``<!-- exec-bench:end -->`` and the JSON into
out/exec_bench.json. ``--episodes 2 --latencies 0`` is a short run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from wam_sim.env import instructions

from .harness import ClosedLoop, HarnessError
from .procs import REPO, SIM_POLICY_YAML
from .report import aggregate, machine_info, write_json, write_section
from .stats import markdown_table

BEGIN = "<!-- exec-bench:begin -->"
END = "<!-- exec-bench:end -->"
HEADING = "## Chunk execution: measured"
MODES = ("replace", "crossfade", "prefix")


def bench_plan(episodes: int, seed0: int) -> list[tuple[int, str]]:
    """Fixed (seed, instruction) pairs cycling over all six instructions (reach and push)."""
    texts = instructions()
    order = [texts[k // 2 + 3 * (k % 2)] for k in range(len(texts))]  # reach, push alternate
    return [(seed0 + i, order[i % len(order)]) for i in range(episodes)]


def chunk_duration(bundle: Path) -> float:
    """horizon x dt of the bundle's action chunk."""
    manifest = yaml.safe_load((bundle / "wam.yaml").read_text())
    return float(manifest["action"]["horizon"]) * float(manifest["action"]["dt"])


def best_mode(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: total idle time (node), the 95th percentile and the largest of the velocity jumps
    at all its boundaries, pooled over its cells. The best mode has the least idle time, then the
    smallest p95 jump: one boundary decides the largest jump, and which mode has it changed from
    run to run when the modes were close; the p95 of some hundred boundaries did not."""
    per: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        mine = [c for c in cells if c["boundary_mode"] == mode]
        if not mine:
            continue
        pooled = [
            float(j)
            for c in mine
            for e in c.get("episodes", [])
            for j in e.get("extra", {}).get("boundary_jumps", [])
        ]
        p95 = (
            float(np.percentile(pooled, 95))
            if pooled
            else float(np.median([c["summary"]["boundary_velocity_jump_p95"] or 0.0 for c in mine]))
        )
        per[mode] = {
            "idle_time_s": float(sum(c["summary"]["idle_time_s_total"] for c in mine)),
            "boundaries": len(pooled),
            "boundary_jump_p95": p95,
            "boundary_jump_mean": float(np.mean(pooled)) if pooled else None,
            "boundary_jump_max": float(
                max(c["summary"]["status_max_boundary_velocity_jump"] for c in mine)
            ),
            "follower_jump_max": float(
                max(c["summary"]["follower_max_velocity_jump"] for c in mine)
            ),
            "success_rate": float(
                sum(c["summary"]["successes"] for c in mine)
                / max(1, sum(c["summary"]["episodes"] for c in mine))
            ),
        }
    ranked = sorted(
        per,
        key=lambda m: (
            round(per[m]["idle_time_s"], 2),
            per[m]["boundary_jump_p95"],
            per[m]["boundary_jump_max"],
        ),
    )
    return {"per_mode": per, "best": ranked[0] if ranked else None}


def markdown(result: dict[str, Any]) -> str:
    """The README section."""
    rows = []
    for c in result["cells"]:
        s = c["summary"]
        rows.append(
            [
                c["boundary_mode"],
                c["extra_latency_s"],
                s["status_latency_p50_s"],
                s["idle_time_s_total"],
                s["follower_idle_s_total"],
                s["status_max_boundary_velocity_jump"],
                s["boundary_velocity_jump_p95"],
                s["follower_max_velocity_jump"],
                f"{s['successes']}/{s['episodes']}",
                s["safety_rejections"],
                s["dropped_steps"],
            ]
        )
    m = result["machine_start"]
    best = result["best"]
    lines = [
        f"`python -m wam_eval.exec_bench` with `{result['bundle']}` (chunk "
        f"{result['chunk_duration_s']:.1f} s), {result['episodes_per_cell']} episodes per cell "
        f"(both task families, seeds {result['seed0']}+), CPU provider on {m['cpus']} cores "
        f"(load average {m['loadavg_1_5_15'][0]} at start). Idle: time the arm had nothing to "
        "follow, by the node (`idle_time_s`) and by the sim's follower, summed over the cell; "
        "boundary jump: the new chunk's velocity at its first point against what the old one "
        "commanded then (node metric, largest and 95th percentile over boundaries); follower "
        "jump: largest change of the follower's desired velocity between 5 ms ticks.",
        "",
        markdown_table(
            [
                "mode",
                "extra latency (s)",
                "latency p50 (s)",
                "idle, node (s)",
                "idle, follower (s)",
                "max boundary jump (rad/s)",
                "p95 boundary jump",
                "follower jump (rad/s)",
                "success",
                "safety rejections",
                "dropped steps",
            ],
            rows,
            digits=3,
        ),
        "",
    ]
    if best["best"]:
        per = best["per_mode"]
        lines.append(
            "Per mode over its cells (all boundaries pooled): "
            + "; ".join(
                f"`{m}` idle {p['idle_time_s']:.2f} s, boundary jump p95 "
                f"{p['boundary_jump_p95']:.3f} / max {p['boundary_jump_max']:.3f} rad/s "
                f"({p['boundaries']} boundaries)"
                for m, p in per.items()
            )
            + "."
        )
        lines.append("")
        lines.append(
            f"Best mode by these runs (least idle, then smallest p95 jump): **{best['best']}**."
        )
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per cell")
    ap.add_argument("--seed0", type=int, default=30000)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--latencies", default="0,0.1,0.3", help="extra latencies (s)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "exec_bench.json")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--domain", type=int, default=91, help="ROS_DOMAIN_ID")
    ap.add_argument(
        "--params-file", type=Path, default=SIM_POLICY_YAML, help="the node's base parameters"
    )
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    latencies = [float(x) for x in args.latencies.split(",") if x.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    if not (args.bundle / "wam.yaml").exists():
        ap.error(f"no bundle at {args.bundle}")
    plan = bench_plan(args.episodes, args.seed0)
    result: dict[str, Any] = {
        "command": "python -m wam_eval.exec_bench " + " ".join(argv or sys.argv[1:]),
        "bundle": str(args.bundle.resolve().relative_to(REPO))
        if args.bundle.resolve().is_relative_to(REPO)
        else str(args.bundle),
        "chunk_duration_s": chunk_duration(args.bundle),
        "episodes_per_cell": args.episodes,
        "seed0": args.seed0,
        "machine_start": machine_info(),
        "cells": [],
    }
    for mode in modes:
        for lat in latencies:
            t0 = time.monotonic()
            overrides = {"boundary_mode": mode, "debug_extra_latency_s": float(lat)}
            try:
                with ClosedLoop(
                    args.bundle, args.domain, overrides, params_file=args.params_file
                ) as loop:
                    records = [loop.run_episode(s, t).to_json() for s, t in plan]
            except HarnessError as e:
                print(f"[{mode} +{lat}s] failed: {e}", file=sys.stderr)
                return 1
            s = aggregate(records)
            result["cells"].append(
                {
                    "boundary_mode": mode,
                    "extra_latency_s": lat,
                    "wall_s": time.monotonic() - t0,
                    "summary": s,
                    "episodes": records,
                }
            )
            print(
                f"[{mode} +{lat:.1f} s] latency p50 {s['status_latency_p50_s']:.3f} s, idle "
                f"{s['idle_time_s_total']:.2f} s (follower {s['follower_idle_s_total']:.2f} s), "
                f"max boundary jump {s['status_max_boundary_velocity_jump']:.3f} rad/s, follower "
                f"jump {s['follower_max_velocity_jump']:.3f}, success "
                f"{s['successes']}/{s['episodes']}",
                flush=True,
            )
            write_json(args.out, result)  # after every cell: a later failure keeps these
    result["machine_end"] = machine_info()
    result["best"] = best_mode(result["cells"])
    write_json(args.out, result)
    print(f"wrote {args.out}")
    text = markdown(result)
    print(text)
    if not args.no_readme:
        write_section(args.readme, BEGIN, END, text, heading=HEADING, before="## Status")
        print(f"updated {args.readme} ({BEGIN} section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
