"""Aggregates of episode records and the files the evaluations write (JSON, markdown sections)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stats import percentiles, replace_between_markers, summarize_rates

__all__ = ["aggregate", "machine_info", "write_json", "write_section"]


def machine_info() -> dict[str, Any]:
    """CPU count, load averages and the time, to qualify timing figures."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Success and control figures over closed-loop episode records (EpisodeRecord.to_json())."""
    out: dict[str, Any] = summarize_rates(records)
    times = [r["time_to_success_s"] for r in records if r.get("time_to_success_s") is not None]
    out["time_to_success_s"] = percentiles(times)
    if not records or "chunks" not in records[0]:
        return out
    compute = [x for r in records for x in r["extra"].get("compute_samples", [])]
    age = [x for r in records for x in r["extra"].get("obs_to_publish_samples", [])]
    enabled = sum(float(r["extra"].get("enabled_s", 0.0)) for r in records)
    chunks = sum(int(r["chunks"]) for r in records)
    final = [
        r["final_gripper_to_object_m"] / max(r["initial_gripper_to_object_m"], 1e-9)
        for r in records
    ]
    out.update(
        {
            "chunks": chunks,
            "enabled_s": enabled,
            "chunks_per_s": chunks / enabled if enabled > 0 else None,
            "compute_s": percentiles(compute),
            "obs_to_publish_s": percentiles(age),
            "status_latency_p50_s": float(np.median([r["status_latency_p50_s"] for r in records])),
            "status_latency_p95_s": float(np.median([r["status_latency_p95_s"] for r in records])),
            "status_latency_max_s": float(max(r["status_latency_max_s"] for r in records)),
            "idle_time_s_total": float(sum(r["idle_time_s"] for r in records)),
            "idle_time_s_max_episode": float(max(r["idle_time_s"] for r in records)),
            "follower_idle_s_total": float(sum(r["follower_idle_s"] for r in records)),
            "idle_fraction": float(sum(r["idle_time_s"] for r in records)) / enabled
            if enabled > 0
            else None,
            "boundary_velocity_jump_max": float(
                max(r["boundary_velocity_jump_max"] for r in records)
            ),
            "boundary_velocity_jump_p95": percentiles(
                [j for r in records for j in r["extra"].get("boundary_jumps", [])]
            )["p95"],
            "status_max_boundary_velocity_jump": float(
                max(r["status_max_boundary_velocity_jump"] for r in records)
            ),
            "follower_max_velocity_jump": float(
                max(r["follower_max_velocity_jump"] for r in records)
            ),
            "dropped_steps": int(sum(r["dropped_steps"] for r in records)),
            "safety_rejections": int(sum(r["safety_rejections"] for r in records)),
            "stale_observations": int(sum(r["stale_observations"] for r in records)),
            "final_over_initial_distance_median": float(np.median(final)),
        }
    )
    return out


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as indented JSON (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")


def write_section(
    path: Path,
    begin: str,
    end: str,
    body: str,
    heading: str | None = None,
    before: str | None = None,
) -> bool:
    """Replaces the text between the marker lines in ``path`` (adds them at the end, after
    ``heading``, when missing; creates the file when it does not exist). True when the file was
    created."""
    created = not path.exists()
    text = "" if created else path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_between_markers(text, begin, end, body, heading, before))
    return created
