"""Closed-loop success rates through the real node: ``python -m wam_eval.closed_loop``.

For each task family, N held-out episodes (seeds ``--seed0 + 1000 * family_index + i``, the
instruction's colour cycling with i; the same episodes for every policy) are run for the WAM
bundle and the action-only bundle, each driven by the wam_policy node binary in closed loop with
the sim node, and for the scripted expert in-process (``wam_sim.expert_episode``). Writes
``models/wam_sim/eval/closed_loop.json`` and a markdown table into models/README.md between
``<!-- closed-loop:begin -->`` and ``<!-- closed-loop:end -->``. ``--episodes 3`` is a short run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from wam_sim.env import MAX_SECONDS, SimEnv, instructions
from wam_sim.expert import expert_episode

from .harness import ClosedLoop, HarnessError
from .procs import REPO
from .report import aggregate, machine_info, write_json, write_section
from .stats import markdown_table

BEGIN = "<!-- closed-loop:begin -->"
END = "<!-- closed-loop:end -->"
FAMILIES = ("reach", "push")


def episode_plan(episodes: int, seed0: int, families: Sequence[str]) -> list[tuple[int, str]]:
    """(seed, instruction) per episode, families interleaved so that a run cut short by the time
    budget still covers every family equally."""
    plan: list[tuple[int, str]] = []
    for i in range(episodes):
        for f in families:
            k = FAMILIES.index(f)
            texts = instructions(f)
            plan.append((seed0 + 1000 * k + i, texts[i % len(texts)]))
    return plan


def run_expert(plan: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """The scripted expert on the same episodes, in-process (no ROS, no rendering)."""
    env = SimEnv((64, 64))
    out: list[dict[str, Any]] = []
    for seed, text in plan:
        env.reset(seed, text)
        g0 = env.gripper_to_object()
        o0 = env.object_to_goal()
        settle = 0.5
        ep = expert_episode(env, seed, text, camera_rate_hz=0.0, settle_s=settle)
        limit = MAX_SECONDS[ep.task_family]
        t_end = env.time
        out.append(
            {
                "seed": seed,
                "instruction": text,
                "task_family": ep.task_family,
                "success": bool(ep.success),
                # The expert's episode ends once solved for settle_s: solved since t_end - settle.
                "time_to_success_s": t_end - settle if ep.success and t_end < limit else None,
                "elapsed_s": t_end,
                "initial_gripper_to_object_m": g0,
                "final_gripper_to_object_m": ep.info["gripper_to_object"],
                "initial_object_to_goal_m": o0,
                "final_object_to_goal_m": ep.info["object_to_goal"],
            }
        )
    return out


def run_policy(
    name: str,
    bundle: Path,
    plan: Sequence[tuple[int, str]],
    domain_id: int,
    max_minutes: float | None,
    overrides: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs the plan's episodes with the node on ``bundle``; stops early at ``max_minutes``."""
    records: list[dict[str, Any]] = []
    info: dict[str, Any] = {"bundle": str(bundle), "planned": len(plan), "stopped_early": False}
    t0 = time.monotonic()
    with ClosedLoop(bundle, domain_id, overrides) as loop:
        info["startup_s"] = time.monotonic() - t0
        for i, (seed, text) in enumerate(plan):
            if max_minutes is not None and time.monotonic() - t0 > 60.0 * max_minutes:
                info["stopped_early"] = True
                break
            r = loop.run_episode(seed, text).to_json()
            records.append(r)
            ok = "success" if r["success"] else "fail"
            tts = r["time_to_success_s"]
            print(
                f"[{name}] {i + 1}/{len(plan)} seed {seed} {text!r}: {ok}"
                + (f" in {tts:.1f} s" if tts is not None else "")
                + f", gripper->object {r['initial_gripper_to_object_m']:.3f} -> "
                f"{r['final_gripper_to_object_m']:.3f} m, {r['chunks']} chunks, idle "
                f"{r['idle_time_s']:.2f} s",
                flush=True,
            )
        status = loop.final_status()
        info["model_id"] = str(status.model_id) if status else ""
        info["execution_provider"] = str(status.execution_provider) if status else ""
        info["boundary_mode"] = str(status.boundary_mode) if status else ""
    info["wall_s"] = time.monotonic() - t0
    return records, info


def summarize(records: Sequence[dict[str, Any]], families: Sequence[str]) -> dict[str, Any]:
    """Per family and overall aggregates."""
    out: dict[str, Any] = {
        f: aggregate([r for r in records if r["task_family"] == f]) for f in families
    }
    out["all"] = aggregate(records)
    return out


def _rate(s: dict[str, Any]) -> str:
    if not s.get("episodes"):
        return "-"
    lo, hi = s["ci95"]
    rate = f"{100 * s['success_rate']:.0f}%"
    return f"{rate} ({s['successes']}/{s['episodes']}; {100 * lo:.0f}-{100 * hi:.0f})"


def markdown(result: dict[str, Any]) -> str:
    """The section written into models/README.md."""
    fams = result["families"]
    pols = result["policies"]
    rows = []
    for name, p in pols.items():
        s = p["summary"]
        row: list[Any] = [name]
        for f in fams:
            row.append(_rate(s[f]))
            row.append(s[f]["time_to_success_s"]["p50"])
        rows.append(row)
    header = ["policy"]
    for f in fams:
        header += [f"{f} success (95% CI)", f"{f} median time to success (s)"]
    lines = [
        f"Closed loop through the real node (`python -m wam_eval.closed_loop`), "
        f"{result['episodes_per_family']} held-out episodes per family planned (seeds "
        f"{result['seed0']}+ for reach, {result['seed0'] + 1000}+ for push, the same for every "
        f"policy); machine: {result['machine_start']['cpus']} CPUs, load average at start "
        f"{result['machine_start']['loadavg_1_5_15'][0]}, at end "
        f"{result['machine_end']['loadavg_1_5_15'][0]}.",
        "",
        markdown_table(header, rows, digits=2),
        "",
    ]
    if "wam" in pols and "expert" in pols:
        for f in fams:
            w, e = pols["wam"]["summary"][f], pols["expert"]["summary"][f]
            if w.get("episodes") and e.get("success_rate"):
                lines.append(
                    f"- {f}: WAM at {100 * w['success_rate'] / e['success_rate']:.0f}% of the "
                    f"expert's success rate."
                )
        lines.append("")
    crow = []
    for name, p in pols.items():
        s = p["summary"]["all"]
        if "chunks" not in s:
            continue
        crow.append(
            [
                name,
                s["episodes"],
                s["chunks"],
                s["chunks_per_s"],
                s["compute_s"]["p50"],
                s["compute_s"]["p95"],
                s["compute_s"]["max"],
                s["obs_to_publish_s"]["p50"],
                s["obs_to_publish_s"]["p95"],
                s["idle_time_s_total"],
                s["follower_idle_s_total"],
                s["boundary_velocity_jump_max"],
                s["safety_rejections"],
            ]
        )
    if crow:
        lines += [
            "Control figures from the same runs (compute: the model's time per chunk from "
            "ActionChunk.total_s; obs→publish: chunk publication minus its observation stamp; "
            "idle: time the arm had no command to follow, by the node and by the sim's follower, "
            "summed over all episodes):",
            "",
            markdown_table(
                [
                    "policy",
                    "episodes",
                    "chunks",
                    "chunks/s",
                    "compute p50 (s)",
                    "p95",
                    "max",
                    "obs→publish p50 (s)",
                    "p95",
                    "idle, node (s)",
                    "idle, follower (s)",
                    "max boundary jump (rad/s)",
                    "safety rejections",
                ],
                crow,
                digits=3,
            ),
            "",
        ]
    for name, p in pols.items():
        if p.get("info", {}).get("stopped_early"):
            ran = p["summary"]["all"]["episodes"]
            lines.append(
                f"- {name}: stopped by the time budget (`--max-minutes`) after {ran} of "
                f"{p['info']['planned']} planned episodes (families interleaved, so equally many "
                "per family)."
            )
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50, help="episodes per task family")
    ap.add_argument("--seed0", type=int, default=20000, help="first held-out seed")
    ap.add_argument("--families", default="reach,push")
    ap.add_argument("--policies", default="wam,action_only,expert")
    ap.add_argument("--wam", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--action-only", type=Path, default=REPO / "models" / "wam_sim_action_only")
    ap.add_argument(
        "--out", type=Path, default=REPO / "models" / "wam_sim" / "eval" / "closed_loop.json"
    )
    ap.add_argument("--readme", type=Path, default=REPO / "models" / "README.md")
    ap.add_argument("--no-readme", action="store_true", help="do not touch the README")
    ap.add_argument("--domain", type=int, default=90, help="ROS_DOMAIN_ID")
    ap.add_argument(
        "--max-minutes", type=float, default=None, help="time budget per node policy (minutes)"
    )
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="node parameter over config/sim_policy.yaml (VALUE read as YAML), e.g. replan_threshold_s=1.0",
    )
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            ap.error(f"--param wants NAME=VALUE, got {item!r}")
        overrides[name.strip()] = yaml.safe_load(value)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for f in families:
        if f not in FAMILIES:
            ap.error(f"unknown family {f!r}")
    plan = episode_plan(args.episodes, args.seed0, families)
    bundles = {"wam": args.wam, "action_only": args.action_only}
    result: dict[str, Any] = {
        "command": "python -m wam_eval.closed_loop " + " ".join(argv or sys.argv[1:]),
        "episodes_per_family": args.episodes,
        "seed0": args.seed0,
        "families": families,
        "node_parameters": overrides,
        "machine_start": machine_info(),
        "policies": {},
    }
    for name in policies:
        t0 = time.monotonic()
        if name == "expert":
            # The same episodes as the node policies ran (all of the plan when none ran).
            ran = [len(p["episodes"]) for p in result["policies"].values()]
            expert_plan = plan[: max(ran)] if ran else plan
            records = run_expert(expert_plan)
            info: dict[str, Any] = {"in_process": True, "wall_s": time.monotonic() - t0}
        elif name in bundles:
            bundle = bundles[name]
            if not (bundle / "wam.yaml").exists():
                print(f"[{name}] no bundle at {bundle}: skipped", file=sys.stderr)
                continue
            try:
                records, info = run_policy(
                    name, bundle, plan, args.domain, args.max_minutes, overrides
                )
            except HarnessError as e:
                print(f"[{name}] failed: {e}", file=sys.stderr)
                return 1
        else:
            ap.error(f"unknown policy {name!r}")
        summary = summarize(records, families)
        result["policies"][name] = {"info": info, "summary": summary, "episodes": records}
        for f in families:
            s = summary[f]
            print(f"[{name}] {f}: {_rate(s)}", flush=True)
    result["machine_end"] = machine_info()
    write_json(args.out, result)
    print(f"wrote {args.out}")
    text = markdown(result)
    print(text)
    if not args.no_readme:
        created = write_section(args.readme, BEGIN, END, text)
        print(f"{'created' if created else 'updated'} {args.readme} ({BEGIN} section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
