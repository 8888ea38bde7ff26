"""The monitor in the simulator (issue 13): ``python -m wam_eval.monitor_bench``.

The real node with the bundled WAM (models/wam_sim, config/sim_policy.yaml as the harness does) and
``monitor: true`` drives the sim; every ``/wam_policy/monitor`` message of every episode is
recorded.

1. Calibration: held-out normal episodes (seeds 40000+ reach, 41000+ push) give the per-camera mean
   and std of ``latent_score`` over the chunks of the successful ones, and the done rule
   (``monitor_done_motion`` / ``monitor_done_change`` / ``monitor_done_chunks``, the F1-best rule of
   "done" against "the sim's task was solved at the chunk's observation time"). These episodes run
   ``AFTER_SUCCESS_S`` past their success so that post-success chunks exist.
2. Evaluation: the node again, on a copy of the bundle carrying that calibration (so it publishes
   z-values) and with the chosen done rule: normal episodes (seeds 50000+) and, per perturbation
   kind, perturbed ones (seeds 60000+; at ``PERTURBATION_TIME_S`` of the family, mid-task, the
   episode then runs ``AFTER_PERTURBATION_S`` more). Reported per kind: ROC-AUC of the chunk score
   (positives: chunks of perturbed episodes whose predicted times all lie after the perturbation;
   negatives: every chunk of the normal evaluation episodes), and the detection rate and delay at
   the threshold with <= 5% false alarms (the per-episode maximum score of the normal evaluation
   episodes: at most 5% of them exceed it); precision and recall of the node's ``done``.

Writes models/wam_sim/eval/monitor.json (raw: every chunk), models/wam_sim/eval/monitor.png and a
"Monitor" section of models/README.md between ``<!-- monitor:begin -->`` / ``<!-- monitor:end -->``.
``--calibrate`` also writes the calibration into the bundle: the ``monitor:`` section of
models/wam_sim/wam.yaml (inserted as text, the rest of the file byte-identical) and
models/wam_sim/eval/monitor_calibration.json, which ``wam_model.export`` carries over when it
rewrites the manifest. ``--episodes 1 --perturbed-episodes 1`` is a short run; ``--analyze-only``
recomputes the report from a monitor.json without running anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from wam_model.manifest import CALIBRATION_COMMENT, section_span

from .procs import REPO
from .report import machine_info, write_json, write_section
from .stats import markdown_table

BEGIN = "<!-- monitor:begin -->"
END = "<!-- monitor:end -->"
HEADING = "## Monitor"
FAMILIES = ("reach", "push")
MONITOR_TOPIC = "/wam_policy/monitor"
# Mid-task: the WAM's median time to success is 2.2 s (reach) and 6.3 s (push); models/README.md.
PERTURBATION_TIME_S = {"reach": 1.0, "push": 3.0}
# A perturbed episode runs this long after its perturbation (success or not): a chunk is scored
# once its last predicted frame (1.6 s ahead) has been seen, so about 3 chunks per episode count.
AFTER_PERTURBATION_S = 4.5
# Normal episodes run this long past their success (post-success chunks for the done rule).
AFTER_SUCCESS_S = 5.0
FALSE_ALARM_RATE = 0.05
SEED0 = {"calibration": 40000, "normal": 50000, "perturbed": 60000}
DONE_CHUNKS = (1, 2, 3, 4)


# -- metrics (pure; tests/test_monitor_bench.py) -------------------------------------------------
def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    v = values[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and v[j + 1] == v[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """ROC-AUC (Mann-Whitney U / (n_pos n_neg), ties count one half): the probability that a
    positive scores above a negative. NaN when either set is empty (non-finite values dropped)."""
    p, n = _finite(positives), _finite(negatives)
    if p.size == 0 or n.size == 0:
        return math.nan
    ranks = average_ranks(np.concatenate([p, n]))
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))


def roc_curve(
    positives: Sequence[float], negatives: Sequence[float]
) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) over every threshold, from (0, 0) to (1, 1)."""
    p, n = _finite(positives), _finite(negatives)
    fpr, tpr = [0.0], [0.0]
    if p.size == 0 or n.size == 0:
        return [0.0, 1.0], [0.0, 1.0]
    for t in np.unique(np.concatenate([p, n]))[::-1]:
        fpr.append(float((n >= t).mean()))
        tpr.append(float((p >= t).mean()))
    return fpr, tpr


def false_alarm_threshold(maxima: Sequence[float], rate: float = FALSE_ALARM_RATE) -> float:
    """The smallest per-episode maximum that at most ``rate`` of the episodes exceed: with n
    episodes, the (n - floor(rate n))-th smallest (n = 10: the largest; n = 20: the second largest).
    A score counts as an alarm when it is strictly above it."""
    v = np.sort(_finite(maxima))
    if v.size == 0:
        return math.nan
    k = math.floor(rate * v.size + 1e-9)
    return float(v[v.size - 1 - k])


def first_detection(
    rows: Sequence[Mapping[str, Any]], t_perturbation: float, threshold: float
) -> dict[str, float] | None:
    """The first chunk score (by arrival) above ``threshold`` among the chunks whose last predicted
    time lies after the perturbation (the first that can hold evidence of it): its delays from the
    perturbation by arrival and by its evidence (the last predicted time). None: not detected."""
    hits = [
        r
        for r in rows
        if r["pred_last"] > t_perturbation
        and r["score"] is not None
        and math.isfinite(r["score"])
        and r["score"] > threshold
    ]
    if not hits:
        return None
    first = min(hits, key=lambda r: float(r["arrival"]))
    return {
        "chunk_id": float(first["chunk_id"]),
        "score": float(first["score"]),
        "arrival_delay_s": float(first["arrival"]) - t_perturbation,
        "evidence_delay_s": float(first["pred_last"]) - t_perturbation,
    }


def calibrate(latents: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Per camera (``latents[v]``: that camera's latent scores), the mean and std (ddof 1) of the
    finite scores, to the 6 significant digits the manifest stores; ``samples``: the smallest
    camera's count. ValueError when a camera has fewer than 2 scores or no spread."""
    means, stds, counts = [], [], []
    for v, values in enumerate(latents):
        a = _finite(values)
        if a.size < 2:
            raise ValueError(f"camera {v}: {a.size} finite latent scores, need >= 2")
        s = float(a.std(ddof=1))
        if not (math.isfinite(s) and s > 0.0):
            raise ValueError(f"camera {v}: latent scores have no spread")
        means.append(float(f"{float(a.mean()):.6g}"))
        stds.append(float(f"{s:.6g}"))
        counts.append(int(a.size))
    return {"latent_mean": means, "latent_std": stds, "samples": min(counts)}


def z_score(latent: Sequence[float | None], calibration: Mapping[str, Any]) -> float:
    """The node's score with a calibration: the largest finite per-camera z-value (NaN: none)."""
    zs = [
        (float(x) - m) / s
        for x, m, s in zip(latent, calibration["latent_mean"], calibration["latent_std"])
        if x is not None and math.isfinite(float(x))
    ]
    return max(zs) if zs else math.nan


def done_flags(
    motion: Sequence[float],
    change: Sequence[float],
    motion_th: float,
    change_th: float,
    chunks: int,
) -> list[bool]:
    """The node's done rule over one episode's chunks in order: done when the predicted motion and
    change stayed strictly below their thresholds for ``chunks`` chunks in a row (0: never)."""
    out, run = [], 0
    for m, c in zip(motion, change):
        run = run + 1 if chunks > 0 and m < motion_th and c < change_th else 0
        out.append(chunks > 0 and run >= chunks)
    return out


def confusion(flags: Sequence[bool], truth: Sequence[bool]) -> dict[str, float]:
    """tp/fp/fn/tn, precision, recall and F1 (NaN where undefined) of ``flags`` against "
    "``truth``."""
    f, t = np.asarray(flags, dtype=bool), np.asarray(truth, dtype=bool)
    tp, fp = int((f & t).sum()), int((f & ~t).sum())
    fn, tn = int((~f & t).sum()), int((~f & ~t).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def rule_confusion(
    episodes: Sequence[Sequence[Mapping[str, Any]]], motion_th: float, change_th: float, chunks: int
) -> dict[str, float]:
    """The done rule's confusion over episodes (each: its chunk rows in order) against "
    "``solved``."""
    flags: list[bool] = []
    truth: list[bool] = []
    for rows in episodes:
        flags += done_flags(
            [r["motion"] for r in rows], [r["change"] for r in rows], motion_th, change_th, chunks
        )
        truth += [bool(r["solved"]) for r in rows]
    return confusion(flags, truth)


def _candidates(values: Sequence[float]) -> list[float]:
    """Thresholds from the values' quantiles, each nudged up so that the value itself passes `<`."""
    a = _finite(values)
    if a.size == 0:
        return [0.0]
    qs = np.unique(np.quantile(a, np.linspace(0.0, 1.0, 41)))
    return sorted({float(np.nextafter(q, np.inf)) for q in qs})


def choose_done_rule(
    episodes: Sequence[Sequence[Mapping[str, Any]]],
    chunk_counts: Sequence[int] = DONE_CHUNKS,
    min_precision: float | None = None,
) -> dict[str, Any]:
    """The F1-best (ties: precision, then the fewest chunks) rule over a grid of thresholds; with
    ``min_precision``, the rule of the largest recall among those at least that precise (ties:
    precision, the fewest chunks, the smallest thresholds), the F1-best when none is."""
    rows = [r for ep in episodes for r in ep]
    best: dict[str, Any] | None = None
    best_key: tuple[float, ...] | None = None
    for n in chunk_counts:
        for m in _candidates([r["motion"] for r in rows]):
            for c in _candidates([r["change"] for r in rows]):
                s = rule_confusion(episodes, m, c, n)
                prec = s["precision"] if math.isfinite(s["precision"]) else 0.0
                rec = s["recall"] if math.isfinite(s["recall"]) else 0.0
                if min_precision is None:
                    key: tuple[float, ...] = (s["f1"], prec, -n)
                else:
                    key = (float(prec >= min_precision), rec, prec, -n, -m, -c)
                    if prec < min_precision:
                        key = (0.0, s["f1"], prec, -n, 0.0, 0.0)
                if best_key is None or key > best_key:
                    best_key = key
                    best = {"motion": m, "change": c, "chunks": n, **s}
    assert best is not None
    return best


def round_up(x: float, digits: int = 3) -> float:
    """``x`` rounded up to ``digits`` significant digits (a threshold that keeps what it passed)."""
    if x <= 0.0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - digits + 1
    return float(round(math.ceil(x / 10.0**e) * 10.0**e, max(0, -e)))


# -- the bundle's manifest ------------------------------------------------------------------------
def monitor_section(calibration: Mapping[str, Any], note: str) -> str:
    """The ``monitor:`` section of wam.yaml (with a comment line naming where it comes from)."""

    def floats(xs: Sequence[float]) -> str:
        return "[" + ", ".join(f"{float(x):.6g}" for x in xs) + "]"

    return (
        f"{CALIBRATION_COMMENT}: {note}\n"
        "monitor:\n"
        f"  latent_mean: {floats(calibration['latent_mean'])}\n"
        f"  latent_std: {floats(calibration['latent_std'])}\n"
        f"  samples: {int(calibration['samples'])}\n"
    )


def insert_monitor_section(text: str, section: str) -> str:
    """``text`` (a wam.yaml) with ``section`` in place of its ``monitor:`` section, or appended
    when it has none; every other byte stays."""
    lines = text.splitlines(keepends=True)
    span = section_span(lines)
    if span is not None:
        k, j = span
        return "".join(lines[:k]) + section + "".join(lines[j:])
    if text and not text.endswith("\n"):
        text += "\n"
    return text + section


def check_calibration(manifest: Mapping[str, Any]) -> None:
    """What the node's loader requires of ``monitor:`` (src/bundle.rs): one entry per camera in
    both lists, finite means, finite stds > 0, no other keys. ValueError otherwise."""
    m = manifest.get("monitor")
    if m is None:
        raise ValueError("no monitor: section")
    if not isinstance(m, Mapping):
        raise TypeError("monitor: is not a map")
    extra = set(m) - {"latent_mean", "latent_std", "samples"}
    if extra:
        raise ValueError(f"monitor: unknown keys {sorted(extra)}")
    cams = len(manifest["cameras"])
    mean, std = m["latent_mean"], m["latent_std"]
    if len(mean) != cams or len(std) != cams:
        raise ValueError(f"monitor: {len(mean)} means / {len(std)} stds for {cams} cameras")
    if not all(math.isfinite(float(x)) for x in mean):
        raise ValueError("monitor.latent_mean must be finite")
    if not all(math.isfinite(float(x)) and float(x) > 0.0 for x in std):
        raise ValueError("monitor.latent_std must be finite and > 0")


@contextmanager
def calibrated_copy(bundle: Path, section: str) -> Iterator[Path]:
    """A temporary bundle: links to ``bundle``'s files and its wam.yaml with ``section``."""
    tmp = Path(tempfile.mkdtemp(prefix="wam_monitor_bundle_"))
    try:
        for entry in bundle.iterdir():
            if entry.name != "wam.yaml":
                os.symlink(entry.resolve(), tmp / entry.name)
        text = insert_monitor_section((bundle / "wam.yaml").read_text(), section)
        check_calibration(yaml.safe_load(text))
        (tmp / "wam.yaml").write_text(text)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- episodes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeSpec:
    """One planned episode: ``group`` is "calibration", "normal" or a perturbation kind."""

    group: str
    seed: int
    instruction: str
    family: str
    camera: str = ""

    @property
    def perturbed(self) -> bool:
        return self.group not in ("calibration", "normal")


def bench_plan(
    episodes: int, perturbed_episodes: int, kinds: Sequence[str], families: Sequence[str]
) -> tuple[list[EpisodeSpec], list[EpisodeSpec]]:
    """(calibration episodes, evaluation episodes): ``episodes`` normal ones per family each, and
    ``perturbed_episodes`` per family and kind (camera kinds alternate the cameras), interleaved so
    that a run cut short still covers every group."""
    from wam_sim.env import instructions
    from wam_sim.perturb import CAMERA_KINDS, KINDS
    from wam_sim.scene import CAMERA_NAMES

    def group(name: str, seed0: int, n: int) -> list[EpisodeSpec]:
        out = []
        for i in range(n):
            for f in families:
                k = FAMILIES.index(f)
                texts = instructions(f)
                cam = CAMERA_NAMES[i % len(CAMERA_NAMES)] if name in CAMERA_KINDS else ""
                out.append(EpisodeSpec(name, seed0 + 1000 * k + i, texts[i % len(texts)], f, cam))
        return out

    calibration = group("calibration", SEED0["calibration"], episodes)
    groups = [group("normal", SEED0["normal"], episodes)]
    for kind in kinds:
        groups.append(group(kind, SEED0["perturbed"] + 100 * KINDS.index(kind), perturbed_episodes))
    evaluation = [g[i] for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)]
    return calibration, evaluation


def _seconds(t: Any) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def episode_time(stamp: float, polls: Sequence[Sequence[float]]) -> float:
    """ROS time (the system clock) -> the sim's episode time, from the harness's polls (wall time,
    elapsed): their offset interpolated (the sim may fall behind the wall clock under load)."""
    walls = np.asarray([p[0] for p in polls], dtype=np.float64)
    offsets = walls - np.asarray([p[1] for p in polls], dtype=np.float64)
    return float(stamp - np.interp(stamp, walls, offsets))


def chunk_row(arrival: float, msg: Any, polls: Sequence[Sequence[float]]) -> dict[str, Any]:
    """One Monitor message as a JSON row (NaN -> None; stamps in ROS seconds)."""
    pred = [_seconds(t) for t in msg.predicted_stamps]
    obs = [_seconds(t) for t in msg.observed_stamps]
    stamp = _seconds(msg.header.stamp)
    return {
        "arrival": arrival,
        "stamp": stamp,
        "t": episode_time(stamp, polls),
        "chunk_id": int(msg.chunk_id),
        "latent": [_num(x) for x in msg.latent_score],
        "psnr_db": [_num(x) for x in msg.psnr_db],
        "z": [_num(x) for x in msg.z],
        "paired": [int(x) for x in msg.paired],
        "score": _num(msg.score),
        "calibrated": bool(msg.calibrated),
        "pred_first": min(pred) if pred else stamp,
        "pred_last": max(pred) if pred else stamp,
        "max_pair_gap_s": max((abs(o - p) for o, p in zip(obs, pred) if o > 0.0), default=None),
        "fully_paired": all(o > 0.0 for o in obs),
        "motion": float(msg.predicted_motion),
        "change": float(msg.predicted_change),
        "done": bool(msg.done),
        "done_confidence": float(msg.done_confidence),
        "consecutive_high": int(msg.consecutive_high),
    }


def run_phase(
    name: str,
    bundle: Path,
    plan: Sequence[EpisodeSpec],
    domain: int,
    overrides: Mapping[str, Any],
    deadline: float | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs ``plan`` through the node on ``bundle`` with ``monitor: true`` and ``overrides``."""
    from wam_policy.msg import Monitor
    from wam_sim.env import MAX_SECONDS
    from wam_sim.perturb import Perturbation

    from .harness import ClosedLoop, HarnessError

    params = {"monitor": True, **overrides}
    info: dict[str, Any] = {"planned": len(plan), "node_overrides": params, "stopped_early": False}
    out: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        with ClosedLoop(bundle, domain, params, record_topics={MONITOR_TOPIC: Monitor}) as loop:
            info["startup_s"] = time.monotonic() - t0
            for i, spec in enumerate(plan):
                if deadline is not None and time.monotonic() > deadline:
                    info["stopped_early"] = True
                    break
                limit = MAX_SECONDS[spec.family]
                if spec.perturbed:
                    p_time = PERTURBATION_TIME_S[spec.family]
                    record = loop.run_episode(
                        spec.seed,
                        spec.instruction,
                        p_time + AFTER_PERTURBATION_S,
                        perturbation=Perturbation(spec.group, p_time, spec.camera),
                        stop_on_success=False,
                    )
                else:
                    record = loop.run_episode(
                        spec.seed,
                        spec.instruction,
                        limit + AFTER_SUCCESS_S,
                        stop_on_success=False,
                        seconds_after_success=AFTER_SUCCESS_S,
                    )
                polls = [p[:2] for p in loop.polls]
                rows = [chunk_row(at, m, polls) for at, m in loop.recorded(MONITOR_TOPIC)]
                rows.sort(key=lambda r: r["arrival"])
                tts = record.time_to_success_s
                for r in rows:
                    r["solved"] = tts is not None and r["t"] >= tts
                p = record.perturbation
                ep = {
                    "phase": name,
                    "group": spec.group,
                    "seed": spec.seed,
                    "instruction": spec.instruction,
                    "family": spec.family,
                    "camera": spec.camera,
                    # Success as closed_loop counts it: within the family's longest time.
                    "success": tts is not None and tts <= limit,
                    "time_to_success_s": tts,
                    "elapsed_s": record.elapsed_s,
                    "wall_s": record.wall_s,
                    "chunks_published": record.chunks,
                    "inferences": record.inferences,
                    "safety_rejections": record.safety_rejections,
                    "perturbation": p,
                    "t_perturbation": None if p is None else p.get("stamp_s"),
                    "start_stamp": polls[0][0] - polls[0][1],
                    "rows": rows,
                }
                out.append(ep)
                scores = [r["score"] for r in rows if r["score"] is not None]
                print(
                    f"[{name}] {i + 1}/{len(plan)} {spec.group}"
                    + (f" ({spec.camera})" if spec.camera else "")
                    + f" seed {spec.seed} {spec.instruction!r}: "
                    + (f"success at {tts:.1f} s" if tts is not None else "no success")
                    + f", {len(rows)} scored of {record.chunks} chunks, max score "
                    + (f"{max(scores):.3g}" if scores else "-"),
                    flush=True,
                )
    except HarnessError as e:
        print(f"[{name}] harness failed, keeping {len(out)} episodes: {e}", file=sys.stderr)
        info["error"] = str(e)
    info["wall_s"] = time.monotonic() - t0
    return out, info


# -- analysis -------------------------------------------------------------------------------------
def _median(xs: Sequence[float]) -> float | None:
    a = _finite(xs)
    return float(np.median(a)) if a.size else None


def calibration_of(episodes: Sequence[Mapping[str, Any]], cameras: int) -> dict[str, Any]:
    """The latent-score calibration over the chunks of the successful ``episodes``."""
    ok = [e for e in episodes if e["success"]]
    per_cam = [
        [r["latent"][v] for e in ok for r in e["rows"] if r["latent"][v] is not None]
        for v in range(cameras)
    ]
    cal = calibrate(per_cam)
    cal["episodes"] = len(ok)
    cal["seeds"] = [e["seed"] for e in ok]
    return cal


def rescore(episodes: Sequence[dict[str, Any]], calibration: Mapping[str, Any], node: bool) -> None:
    """Adds to every row ``z_offline`` (the score the node would publish with ``calibration``) and
    ``s``, the score the analysis uses: the node's own where it ran with ``calibration`` (``node``
    and the message calibrated), else ``z_offline``."""
    for e in episodes:
        for r in e["rows"]:
            r["z_offline"] = _num(z_score(r["latent"], calibration))
            r["s"] = r["score"] if node and r["calibrated"] else r["z_offline"]


def pixel_calibration(episodes: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per camera, the mean and std of -PSNR over the chunks of the successful ``episodes`` (an
    offline alternative to the latent score: the node publishes PSNR but scores latents)."""
    ok = [r for e in episodes if e["success"] for r in e["rows"]]
    cams = len(ok[0]["psnr_db"]) if ok else 0
    vals = [_finite([-x for r in ok if (x := r["psnr_db"][v]) is not None]) for v in range(cams)]
    return {
        "mean": [float(a.mean()) if a.size else math.nan for a in vals],
        "std": [float(a.std(ddof=1)) if a.size > 1 else math.nan for a in vals],
    }


def pixel_score(r: Mapping[str, Any], cal: Mapping[str, Sequence[float]]) -> float:
    """The largest per-camera z of -PSNR (NaN: none)."""
    zs = [
        (-float(x) - m) / s
        for x, m, s in zip(r["psnr_db"], cal["mean"], cal["std"])
        if x is not None and math.isfinite(s) and s > 0
    ]
    return max(zs) if zs else math.nan


def _score(r: Mapping[str, Any]) -> float:
    s = r.get("s")
    return math.nan if s is None else float(s)


def analyze(
    calibration_eps: Sequence[dict[str, Any]],
    evaluation_eps: Sequence[dict[str, Any]],
    calibration: Mapping[str, Any],
    rule: Mapping[str, Any],
    kinds: Sequence[str],
) -> dict[str, Any]:
    """Every figure of the report."""
    rescore(calibration_eps, calibration, node=False)
    rescore(evaluation_eps, calibration, node=True)
    pixel = pixel_calibration(calibration_eps)
    for e in [*calibration_eps, *evaluation_eps]:
        for r in e["rows"]:
            r["px"] = pixel_score(r, pixel)
    normal = [e for e in evaluation_eps if e["group"] == "normal"]
    neg = [_score(r) for e in normal for r in e["rows"]]
    maxima = [max((_score(r) for r in e["rows"]), default=math.nan) for e in normal]
    threshold = false_alarm_threshold(maxima)
    cal_max = [max((_score(r) for r in e["rows"]), default=math.nan) for e in calibration_eps]
    out: dict[str, Any] = {
        "threshold": threshold,
        "normal": {
            "episodes": len(normal),
            "chunks": len(neg),
            "successes": sum(e["success"] for e in normal),
            "false_alarm_episodes": int(sum(m > threshold for m in maxima)),
            "episode_max_scores": maxima,
            # Out of sample: the calibration episodes are normal episodes the threshold never saw.
            "calibration_false_alarm_episodes": int(sum(m > threshold for m in cal_max)),
            "calibration_episodes": len(cal_max),
        },
        "kinds": {},
        "pixel_calibration": pixel,
    }
    fam_neg = {
        f: [_score(r) for e in normal if e["family"] == f for r in e["rows"]] for f in FAMILIES
    }
    out["normal"]["per_family"] = {
        f: {
            "chunks": len(v),
            "median_score": _median(v),
            "max_score": max(_finite(v), default=None),
            "median_chunks_published": _median(
                [e["chunks_published"] for e in normal if e["family"] == f]
            ),
        }
        for f, v in fam_neg.items()
    }
    px_neg = [float(r["px"]) for e in normal for r in e["rows"]]
    for kind in kinds:
        eps = [e for e in evaluation_eps if e["group"] == kind]
        applied = [e for e in eps if e["t_perturbation"] is not None]
        pos = [
            _score(r) for e in applied for r in e["rows"] if r["pred_first"] > e["t_perturbation"]
        ]
        detections = []
        for e in applied:
            d = first_detection(
                [{**r, "score": _score(r)} for r in e["rows"]], e["t_perturbation"], threshold
            )
            early = [
                r
                for r in e["rows"]
                if r["pred_last"] <= e["t_perturbation"] and _score(r) > threshold
            ]
            detections.append(
                {
                    "seed": e["seed"],
                    "camera": e["camera"],
                    "detection": d,
                    "false_alarm_before": bool(early),
                }
            )
        detected = [d["detection"] for d in detections if d["detection"] is not None]
        fpr, tpr = roc_curve(pos, neg)
        per_family = {}
        for f in FAMILIES:
            fe = [e for e in applied if e["family"] == f]
            fpos = [
                _score(r) for e in fe for r in e["rows"] if r["pred_first"] > e["t_perturbation"]
            ]
            per_family[f] = {
                "episodes": len(fe),
                "positives": len(fpos),
                "auc": roc_auc(fpos, fam_neg[f]),
                "median_chunks_published": _median([e["chunks_published"] for e in fe]),
                "safety_rejections": sum(int(e.get("safety_rejections") or 0) for e in fe),
            }
        px_pos = [
            float(r["px"])
            for e in applied
            for r in e["rows"]
            if r["pred_first"] > e["t_perturbation"]
        ]
        out["kinds"][kind] = {
            "per_family": per_family,
            "auc_pixels": roc_auc(px_pos, px_neg),
            "episodes": len(eps),
            "applied": len(applied),
            "successes": sum(e["success"] for e in eps),
            "positives": len(pos),
            "auc": roc_auc(pos, neg),
            "positive_score_median": _median(pos),
            "detected": len(detected),
            "detection_rate": len(detected) / len(applied) if applied else math.nan,
            "median_delay_s": _median([d["arrival_delay_s"] for d in detected]),
            "median_evidence_delay_s": _median([d["evidence_delay_s"] for d in detected]),
            "false_alarms_before": sum(d["false_alarm_before"] for d in detections),
            "per_episode": detections,
            "roc": {"fpr": fpr, "tpr": tpr},
        }
    out["negative_score_median"] = _median(neg)
    out["done"] = done_report(normal, rule)
    out["done_calibration"] = done_report(calibration_eps, rule)
    # A precision-first alternative (a premature done ends the task), chosen the same way.
    alt = choose_done_rule([e["rows"] for e in calibration_eps], min_precision=0.9)
    m, c, k = round_up(alt["motion"]), round_up(alt["change"]), int(alt["chunks"])
    out["done_precision_first"] = {
        "rule": {"motion": m, "change": c, "chunks": k},
        "calibration": rule_confusion([e["rows"] for e in calibration_eps], m, c, k),
        "evaluation": rule_confusion([e["rows"] for e in normal], m, c, k),
    }
    out["safety_rejections"] = {
        "normal": sum(int(e.get("safety_rejections") or 0) for e in normal),
        "recorded": all("safety_rejections" in e for e in evaluation_eps),
    }
    rows = [r for e in [*calibration_eps, *evaluation_eps] for r in e["rows"]]
    out["monitor_checks"] = {
        "chunks": len(rows),
        "nan_scores": sum(r["score"] is None for r in rows),
        "unpaired_camera_chunks": sum(p == 0 for r in rows for p in r["paired"]),
        "fully_paired_chunks": sum(bool(r.get("fully_paired")) for r in rows),
        "max_pair_gap_s": max(
            (r["max_pair_gap_s"] for r in rows if r["max_pair_gap_s"] is not None), default=None
        ),
        "max_z_mismatch": max(
            (
                abs(r["score"] - r["z_offline"])
                for e in evaluation_eps
                for r in e["rows"]
                if r["calibrated"] and r["score"] is not None and r["z_offline"] is not None
            ),
            default=None,
        ),
        "chunks_published": sum(
            int(e["chunks_published"]) for e in [*calibration_eps, *evaluation_eps]
        ),
    }
    return out


def done_report(episodes: Sequence[Mapping[str, Any]], rule: Mapping[str, Any]) -> dict[str, Any]:
    """Precision/recall of ``done`` against ``solved`` over the chunks of ``episodes``: the node's
    own flags (when it ran with the rule) and the rule applied offline to the logged features; per
    episode, when done first fired relative to the success."""
    per_ep = [e["rows"] for e in episodes]
    offline = rule_confusion(per_ep, rule["motion"], rule["change"], int(rule["chunks"]))
    node = confusion(
        [bool(r["done"]) for rows in per_ep for r in rows],
        [bool(r["solved"]) for rows in per_ep for r in rows],
    )
    mismatch = 0
    premature, late, missed, false_done = [], [], 0, 0
    premature_seeds, false_done_seeds = [], []
    for e in episodes:
        rows = e["rows"]
        flags = done_flags(
            [r["motion"] for r in rows],
            [r["change"] for r in rows],
            rule["motion"],
            rule["change"],
            int(rule["chunks"]),
        )
        mismatch += sum(f != r["done"] for f, r in zip(flags, rows))
        first = next((r for r, f in zip(rows, flags) if f), None)
        tts = e["time_to_success_s"]
        if tts is None:
            false_done += first is not None
            if first is not None:
                false_done_seeds.append(e["seed"])
        elif first is None:
            missed += 1
        elif first["t"] < tts:
            premature.append(first["t"] - tts)
            premature_seeds.append(e["seed"])
        else:
            late.append(first["t"] - tts)
    return {
        "offline": offline,
        "node": node,
        "node_offline_mismatches": mismatch,
        "episodes": len(episodes),
        "solved_episodes": sum(e["time_to_success_s"] is not None for e in episodes),
        "done_before_success": len(premature),
        "done_after_success": len(late),
        "median_observation_delay_s": _median(late),
        "never_done_after_success": missed,
        "done_without_success": false_done,
        "done_before_success_seeds": premature_seeds,
        "done_before_success_s": premature,
        "done_without_success_seeds": false_done_seeds,
    }


# -- plot (PIL: the environment has no matplotlib) ------------------------------------------------
def _ty(s: float) -> float:
    return math.copysign(math.log10(1.0 + abs(s)), s)


COLOURS = [(213, 62, 79), (244, 109, 67), (253, 174, 97), (102, 194, 165), (50, 136, 189)]
KIND_COLOURS = [
    (228, 26, 28),
    (55, 126, 184),
    (77, 175, 74),
    (152, 78, 163),
    (255, 127, 0),
    (166, 86, 40),
    (247, 129, 191),
]


class _Panel:
    def __init__(
        self,
        draw: Any,
        box: tuple[int, int, int, int],
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        font: Any,
    ) -> None:
        self.d, self.font = draw, font
        self.x0, self.y0, self.x1, self.y1 = box[0] + 46, box[1] + 22, box[2] - 8, box[3] - 34
        self.xlim, self.ylim = xlim, ylim
        draw.rectangle([self.x0, self.y0, self.x1, self.y1], outline=(0, 0, 0))

    def px(self, x: float, y: float) -> tuple[float, float]:
        (a, b), (c, d) = self.xlim, self.ylim
        x = min(max(x, a), b)
        y = min(max(y, c), d)
        return (
            self.x0 + (x - a) / (b - a) * (self.x1 - self.x0),
            self.y1 - (y - c) / (d - c) * (self.y1 - self.y0),
        )

    def text(self, xy: tuple[float, float], s: str, anchor: str = "la") -> None:
        self.d.text(xy, s, fill=(0, 0, 0), font=self.font, anchor=anchor)

    def labels(self, title: str, xlabel: str, ylabel: str) -> None:
        self.text(((self.x0 + self.x1) / 2, self.y0 - 4), title, "ms")
        self.text(((self.x0 + self.x1) / 2, self.y1 + 30), xlabel, "ms")
        self.text((self.x0 - 44, self.y0 - 20), ylabel, "la")

    def xticks(self, ticks: Sequence[float], fmt: str = "{:g}") -> None:
        for t in ticks:
            x, y = self.px(t, self.ylim[0])
            self.d.line([x, y, x, y + 4], fill=(0, 0, 0))
            self.text((x, y + 6), fmt.format(t), "ma")

    def yticks(self, ticks: Sequence[float], labels: Sequence[str]) -> None:
        for t, s in zip(ticks, labels):
            x, y = self.px(self.xlim[0], t)
            self.d.line([x - 4, y, x, y], fill=(0, 0, 0))
            self.d.line([x + 1, y, self.x1, y], fill=(235, 235, 235))
            self.text((x - 6, y), s, "rm")

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: Any, width: int = 2) -> None:
        pts = [self.px(x, y) for x, y in zip(xs, ys) if self.xlim[0] <= x <= self.xlim[1]]
        if len(pts) > 1:
            self.d.line(pts, fill=colour, width=width)

    def dashed(self, x0: float, y0: float, x1: float, y1: float, colour: Any) -> None:
        (a, b), (c, d) = self.px(x0, y0), self.px(x1, y1)
        n = 30
        for i in range(0, n, 2):
            self.d.line(
                [
                    a + (c - a) * i / n,
                    b + (d - b) * i / n,
                    a + (c - a) * (i + 1) / n,
                    b + (d - b) * (i + 1) / n,
                ],
                fill=colour,
                width=2,
            )

    def dot(self, x: float, y: float, colour: Any, r: float = 2.5) -> None:
        if not self.xlim[0] <= x <= self.xlim[1]:
            return
        u, v = self.px(x, y)
        self.d.ellipse([u - r, v - r, u + r, v + r], fill=colour)


def plot(
    path: Path,
    evaluation_eps: Sequence[Mapping[str, Any]],
    result: Mapping[str, Any],
    kinds: Sequence[str],
) -> None:
    """Per kind: every chunk score (z, log scale) against its last predicted time relative to the
    perturbation (perturbed episodes in colour, normal ones in grey at the same nominal time) with
    the 5%-false-alarm threshold; last panel: the ROC curves."""
    from PIL import Image, ImageDraw, ImageFont

    cols, w, h = 4, 400, 330
    rows_n = (len(kinds) + 1 + cols - 1) // cols
    img = Image.new("RGB", (cols * w, rows_n * h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    try:
        font: Any = ImageFont.load_default(size=12)
    except TypeError:
        font = ImageFont.load_default()
    threshold = float(result["threshold"])
    all_scores = [
        _score(r) for e in evaluation_eps for r in e["rows"] if math.isfinite(_score(r))
    ] or [0.0]
    y_lo, y_hi = _ty(min(min(all_scores), -1.0)), _ty(max(max(all_scores), 10.0))
    y_lo, y_hi = y_lo - 0.05 * (y_hi - y_lo), y_hi + 0.05 * (y_hi - y_lo)
    ticks = [
        t
        for t in (-30, -10, -3, -1, 0, 1, 3, 10, 30, 100, 300, 1000, 3000)
        if y_lo <= _ty(t) <= y_hi
    ]
    xlim = (-2.0, AFTER_PERTURBATION_S + 0.5)
    for k, kind in enumerate(kinds):
        box = ((k % cols) * w, (k // cols) * h, (k % cols + 1) * w, (k // cols + 1) * h)
        p = _Panel(draw, box, xlim, (y_lo, y_hi), font)
        p.yticks([_ty(t) for t in ticks], [f"{t:g}" for t in ticks])
        p.xticks([-2, -1, 0, 1, 2, 3, 4])
        for e in evaluation_eps:
            if e["group"] != "normal":
                continue
            t_ref = e["start_stamp"] + PERTURBATION_TIME_S[e["family"]]
            for r in e["rows"]:
                if math.isfinite(_score(r)):
                    p.dot(r["pred_last"] - t_ref, _ty(_score(r)), (170, 170, 170), 2.0)
        for e in evaluation_eps:
            if e["group"] != kind or e["t_perturbation"] is None:
                continue
            tp = e["t_perturbation"]
            xs = [r["pred_last"] - tp for r in e["rows"] if math.isfinite(_score(r))]
            ys = [_ty(_score(r)) for r in e["rows"] if math.isfinite(_score(r))]
            colour = KIND_COLOURS[k % len(KIND_COLOURS)]
            p.line(xs, ys, colour + (0,), 1)
            for x, y in zip(xs, ys):
                p.dot(x, y, colour, 3.0)
        p.dashed(xlim[0], _ty(threshold), xlim[1], _ty(threshold), (0, 0, 0))
        p.dashed(0.0, y_lo, 0.0, y_hi, (120, 120, 120))
        s = result["kinds"][kind]
        auc = s["auc"]
        p.labels(
            f"{kind}: AUC {auc:.2f}, detected {s['detected']}/{s['applied']}"
            if math.isfinite(auc)
            else f"{kind}: no data",
            "last predicted time - perturbation (s)",
            "",
        )
    k = len(kinds)
    box = ((k % cols) * w, (k // cols) * h, (k % cols + 1) * w, (k // cols + 1) * h)
    p = _Panel(draw, box, (0.0, 1.0), (0.0, 1.0), font)
    p.xticks([0, 0.25, 0.5, 0.75, 1.0])
    p.yticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"])
    p.dashed(0.0, 0.0, 1.0, 1.0, (150, 150, 150))
    for i, kind in enumerate(kinds):
        roc = result["kinds"][kind]["roc"]
        colour = KIND_COLOURS[i % len(KIND_COLOURS)]
        p.line(roc["fpr"], roc["tpr"], colour, 2)
        p.text((p.x1 - 4, p.y1 - 8 - 14 * (len(kinds) - 1 - i)), kind, "rs")
        tx, ty = p.x1 - 4 - font.getlength(kind) - 14, p.y1 - 14 - 14 * (len(kinds) - 1 - i)
        draw.rectangle([tx, ty, tx + 9, ty + 6], fill=colour)
    p.labels("ROC: chunks after the perturbation vs normal", "false positive rate", "TPR")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# -- report ---------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def markdown(result: Mapping[str, Any]) -> str:
    """The section written into models/README.md."""
    a = result["analysis"]
    cal = result["calibration"]
    rule = result["done_rule"]
    n = a["normal"]
    cams = result["cameras"]
    plan = result["plan"]
    lines = [
        f"`python -m wam_eval.monitor_bench {' '.join(result['argv'])}`".replace(" `", "`"),
        (
            f"(the node binary with `monitor: true` on models/wam_sim, config/sim_policy.yaml; "
            f"{result['machine_start']['cpus']} CPUs; {result['wall_s'] / 60:.1f} min). "
            f"Calibration: {len(result['calibration_episodes'])} normal episodes (seeds "
            f"{SEED0['calibration']}+ reach, {SEED0['calibration'] + 1000}+ push), evaluation: "
            f"{n['episodes']} normal episodes (seeds {SEED0['normal']}+) and "
            f"{plan['perturbed_episodes'] * len(plan['families'])} per perturbation kind (seeds "
            f"{SEED0['perturbed']}+, camera kinds alternating exterior/wrist), applied at "
            f"{PERTURBATION_TIME_S['reach']} s (reach) / {PERTURBATION_TIME_S['push']} s (push), "
            f"mid-task; a perturbed episode runs {AFTER_PERTURBATION_S} s past it, a normal one "
            f"{AFTER_SUCCESS_S} s past its success."
        ),
        "",
        "**Calibration** (latent score = MSE of predicted vs observed frame latents, over the "
        "chunks "
        f"of {cal['episodes']} successful calibration episodes; in the bundle's `monitor:` "
        "section, the node publishes z-values against it): "
        + ", ".join(
            f"{c} mean {cal['latent_mean'][v]:.4g}, std {cal['latent_std'][v]:.4g}"
            for v, c in enumerate(cams)
        )
        + f" ({cal['samples']} chunks).",
        "",
        (
            "**Perturbations.** Score = the node's `score` (largest z over the cameras). "
            "Negatives: "
            f"all {n['chunks']} chunks of the {n['episodes']} normal evaluation episodes; "
            "positives: "
            "chunks of perturbed episodes whose predicted times all lie after the perturbation. "
            f"Threshold for <= {100 * FALSE_ALARM_RATE:.0f}% false alarms: z > "
            f"{_f(a['threshold'])} (the largest per-episode maximum that at most 5% of the normal "
            f"evaluation episodes exceed: {n['false_alarm_episodes']}/{n['episodes']} do; out of "
            f"sample, {n['calibration_false_alarm_episodes']}/{n['calibration_episodes']} "
            "calibration episodes do). Delay: from the perturbation to the arrival of the first "
            "`~/monitor` message above the threshold among the chunks whose last predicted time "
            "lies "
            "after it (evidence: to that last predicted time)."
        ),
        "",
    ]
    rows = []
    for kind, s in a["kinds"].items():
        rows.append(
            [
                kind,
                f"{s['applied']}/{s['episodes']}",
                s["positives"],
                _f(s["auc"]),
                _f(s["per_family"]["reach"]["auc"]),
                _f(s["per_family"]["push"]["auc"]),
                _f(s["auc_pixels"]),
                _f(s["positive_score_median"], 1),
                f"{s['detected']}/{s['applied']}",
                _f(s["median_delay_s"]),
                _f(s["median_evidence_delay_s"]),
                s["false_alarms_before"],
            ]
        )
    lines += [
        markdown_table(
            [
                "perturbation",
                "applied",
                "positive chunks",
                "ROC-AUC",
                "AUC reach only",
                "AUC push only",
                "AUC, PSNR score (offline)",
                "median z after",
                "detected",
                "median delay (s)",
                "evidence delay (s)",
                "alarms before it",
            ],
            rows,
        ),
        "",
        (
            '"reach only" / "push only": positives and negatives of that family alone. "PSNR '
            'score": the same comparison with the largest per-camera z of -PSNR (calibrated on the '
            "same calibration chunks) instead of the latent z, computed offline from the PSNR the "
            "node publishes."
        ),
        "",
    ]
    fam = n["per_family"]
    lines.append(
        "- Normal evaluation chunks: median z "
        + ", ".join(
            f"{f} {_f(fam[f]['median_score'], 1)} (max {_f(fam[f]['max_score'], 1)})"
            for f in fam
            if fam[f]["chunks"]
        )
        + ". The threshold comes from the worst normal episode of either family, and one "
        "calibration serves every task."
    )
    weak = [k for k, s in a["kinds"].items() if math.isfinite(s["auc"]) and s["auc"] < 0.65]
    strong = [k for k, s in a["kinds"].items() if math.isfinite(s["auc"]) and s["auc"] >= 0.85]
    if strong:
        lines.append(f"- Flagged well (AUC >= 0.85): {', '.join(strong)}.")
    if weak:
        lines.append(
            f"- Near chance (AUC < 0.65): {', '.join(weak)}: at the 5% false-alarm threshold the "
            "monitor does not see these."
        )
    better_px = [
        f"{k} ({_f(s['auc'])} -> {_f(s['auc_pixels'])})"
        for k, s in a["kinds"].items()
        if math.isfinite(s["auc_pixels"]) and s["auc_pixels"] >= s["auc"] + 0.1
    ]
    if better_px:
        lines.append(f"- The PSNR score separates better: {', '.join(better_px)}.")
    for k, s in a["kinds"].items():
        for f, pf in s["per_family"].items():
            normal_chunks = fam[f]["median_chunks_published"]
            got = pf["median_chunks_published"]
            if normal_chunks and got is not None and pf["episodes"] and got <= 0.5 * normal_chunks:
                lines.append(
                    f"- {k}, {f}: {got:.0f} chunks published per episode (median; normal "
                    f"{normal_chunks:.0f}): the node stopped accepting chunks after the "
                    "perturbation"
                    + (
                        f" ({pf['safety_rejections']} refused by the safety checks)"
                        if pf["safety_rejections"]
                        else ""
                    )
                    + ", so the monitor had almost nothing to score."
                )
    prev = result.get("previous")
    if prev:
        lines.append(
            f"- Repeat: the previous run of the bench ({prev['time']}, the same seeds; the timing "
            "of a loaded 2-core machine differs from run to run, and with it every episode) gave "
            "ROC-AUC "
            + ", ".join(
                f"{k} {_f(prev['auc'].get(k))}" for k in a["kinds"] if k in prev.get("auc", {})
            )
            + f"; threshold z > {_f(prev['threshold'])}; detected "
            + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in prev.get("detected", {}).items() if v[0])
            + f"; done rule motion {prev['done_rule']['motion']}, change "
            f"{prev['done_rule']['change']}, {prev['done_rule']['chunks']} chunks: precision "
            f"{_f(prev['done']['precision'])}, recall {_f(prev['done']['recall'])}. With 24 "
            "positive chunks per kind, differences of ~0.1 in AUC are noise."
        )
    d, dc, alt = a["done"], a["done_calibration"], a["done_precision_first"]
    lines += [
        "",
        (
            "**Done.** Rule chosen on the calibration episodes (F1 of `done` against \"the sim's "
            "task "
            "was solved at the chunk's observation time\", grid over the features' quantiles and "
            "1-4 "
            f"chunks): `monitor_done_motion: {rule['motion']}`, `monitor_done_change: "
            f"{rule['change']}`, `monitor_done_chunks: {rule['chunks']}` (calibration: precision "
            f"{_f(dc['offline']['precision'])}, recall {_f(dc['offline']['recall'])}). On the "
            "normal "
            "evaluation episodes, the node running that rule:"
        ),
        "",
        markdown_table(
            [
                "",
                "chunks",
                "solved chunks",
                "precision",
                "recall",
                "F1",
                "episodes done before success",
                "after (median delay, s)",
                "solved, never done",
                "done, never solved",
            ],
            [
                [
                    "node's `done`",
                    sum(d["node"][k] for k in ("tp", "fp", "fn", "tn")),
                    d["node"]["tp"] + d["node"]["fn"],
                    _f(d["node"]["precision"]),
                    _f(d["node"]["recall"]),
                    _f(d["node"]["f1"]),
                    d["done_before_success"],
                    f"{d['done_after_success']} ({_f(d['median_observation_delay_s'])})",
                    d["never_done_after_success"],
                    d["done_without_success"],
                ]
            ],
        ),
        "",
    ]
    if d["done_before_success"] or d["done_without_success"]:
        early = ", ".join(
            f"{seed} ({-dt:.1f} s before its success)"
            for seed, dt in zip(d["done_before_success_seeds"], d["done_before_success_s"])
        )
        never = ", ".join(str(x) for x in d["done_without_success_seeds"])
        lines += [
            "Wrong `done`s: "
            + "; ".join(
                x
                for x in (
                    f"before the success in {early}" if early else "",
                    f"in {never}, never solved" if never else "",
                )
                if x
            )
            + ". The features only see a slow, unchanging prediction, and a policy that has "
            "slowed down or stopped short predicts that too: `done` means "
            '"the model expects little more to happen", not "solved".',
            "",
        ]
    lines += [
        (
            f"A precision-first rule (the largest calibration recall at precision >= 0.9: "
            f"`monitor_done_motion: {alt['rule']['motion']}`, `monitor_done_change: "
            f"{alt['rule']['change']}`, `monitor_done_chunks: {alt['rule']['chunks']}`; "
            "calibration "
            f"precision {_f(alt['calibration']['precision'])}, recall "
            f"{_f(alt['calibration']['recall'])}) gives on the same evaluation episodes (offline) "
            f"precision {_f(alt['evaluation']['precision'])}, recall "
            f"{_f(alt['evaluation']['recall'])}."
        ),
        "",
        (
            f"(The rule applied offline to the logged features gives precision "
            f"{_f(d['offline']['precision'])}, recall {_f(d['offline']['recall'])}; it disagrees "
            "with "
            f"the node's flags on {d['node_offline_mismatches']} chunks. The delay is from the "
            "success "
            "to the observation of the first chunk called done; the message arrives about 1.7 s "
            "after "
            "that observation, when the chunk's last predicted frame has been compared.)"
        ),
        "",
    ]
    c = a["monitor_checks"]
    lines += [
        (
            f"Checks of the monitor itself: {c['chunks']} `~/monitor` messages for "
            f"{c['chunks_published']} published chunks (chunks whose predicted times outlast the "
            f"episode are never scored: the disable clears them), {c['nan_scores']} NaN scores, "
            f"{c['fully_paired_chunks']} with every predicted frame paired, "
            f"{c['unpaired_camera_chunks']} camera-chunks with none paired; largest pairing gap "
            f"{_f(c['max_pair_gap_s'], 3)} s; node z vs z recomputed from its latent scores: "
            "largest "
            f"difference {_f(c['max_z_mismatch'], 6)}."
        ),
        "",
        "![monitor](wam_sim/eval/monitor.png)",
        "",
        (
            "Plot: per kind, every chunk's score (the node's z, log scale) against its last "
            "predicted time relative "
            "to the perturbation (grey: normal episodes at the same nominal time), the dashed "
            "line the "
            "threshold; last panel: ROC curves."
        ),
    ]
    return "\n".join(lines).rstrip() + "\n"


def run_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a monitor.json, to compare a repeat with."""
    a = result["analysis"]
    return {
        "time": result["machine_start"]["time"],
        "threshold": a["threshold"],
        "auc": {k: s["auc"] for k, s in a["kinds"].items()},
        "detected": {k: [s["detected"], s["applied"]] for k, s in a["kinds"].items()},
        "calibration": {k: result["calibration"][k] for k in ("latent_mean", "latent_std")},
        "done_rule": {k: result["done_rule"][k] for k in ("motion", "change", "chunks")},
        "done": {k: a["done"]["node"][k] for k in ("precision", "recall")},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    from wam_sim.perturb import KINDS
    from wam_sim.scene import CAMERA_NAMES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--episodes", type=int, default=5, help="calibration and normal episodes per family"
    )
    ap.add_argument(
        "--perturbed-episodes", type=int, default=4, help="episodes per family and kind"
    )
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--out", type=Path, default=None, help="default: <bundle>/eval/monitor.json")
    ap.add_argument("--readme", type=Path, default=REPO / "models" / "README.md")
    ap.add_argument("--no-readme", action="store_true", help="do not touch the README")
    ap.add_argument(
        "--calibrate", action="store_true", help="write the calibration into the bundle"
    )
    ap.add_argument("--domain", type=int, default=80, help="ROS_DOMAIN_ID")
    ap.add_argument("--max-minutes", type=float, default=None, help="time budget for the runs")
    ap.add_argument(
        "--analyze-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="recompute the report from a monitor.json (no episodes run)",
    )
    ap.add_argument(
        "--previous",
        type=Path,
        default=None,
        metavar="JSON",
        help="an earlier monitor.json of the same plan to compare with (default: the one --out "
        "replaces)",
    )
    args = ap.parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown perturbation kind {k!r}")
    for f in families:
        if f not in FAMILIES:
            ap.error(f"unknown family {f!r}")
    bundle = args.bundle if args.bundle.is_absolute() else Path.cwd() / args.bundle
    out = args.out or bundle / "eval" / "monitor.json"
    t0 = time.monotonic()
    cameras = list(CAMERA_NAMES)
    previous: dict[str, Any] | None = None
    if args.previous is not None:
        previous = run_summary(json.loads(args.previous.read_text()))
    elif args.analyze_only is None and out.exists():
        try:
            old = json.loads(out.read_text())
            previous = run_summary(old) if old.get("plan", {}).get("kinds") == kinds else None
        except (ValueError, KeyError) as e:
            print(f"ignoring the previous {out}: {e}", file=sys.stderr)
    if args.analyze_only is not None:
        prev = json.loads(args.analyze_only.read_text())
        cal_eps, eval_eps = prev["calibration_episodes"], prev["evaluation_episodes"]
        calibration, rule, info = prev["calibration"], prev["done_rule"], prev["runs"]
        kinds = list(prev["analysis"]["kinds"])
        plan = prev["plan"]
        machine_start, wall_s = prev["machine_start"], prev["wall_s"]
        argv_list = prev["argv"]
        if previous is None:
            previous = prev.get("previous")
    else:
        machine_start = machine_info()
        plan = {
            "episodes": args.episodes,
            "perturbed_episodes": args.perturbed_episodes,
            "families": families,
            "kinds": kinds,
        }
        cal_plan, eval_plan = bench_plan(args.episodes, args.perturbed_episodes, kinds, families)
        deadline = None if args.max_minutes is None else t0 + 60.0 * args.max_minutes
        cal_eps, cal_info = run_phase("calibration", bundle, cal_plan, args.domain, {}, deadline)
        try:
            calibration = calibration_of(cal_eps, len(cameras))
        except ValueError as e:
            print(f"calibration failed: {e}", file=sys.stderr)
            return 1
        chosen = choose_done_rule([e["rows"] for e in cal_eps])
        rule = {
            "motion": round_up(chosen["motion"]),
            "change": round_up(chosen["change"]),
            "chunks": int(chosen["chunks"]),
            "selection": chosen,
        }
        print(f"calibration {calibration}\ndone rule {rule}", flush=True)
        overrides = {
            "monitor_done_motion": float(rule["motion"]),
            "monitor_done_change": float(rule["change"]),
            "monitor_done_chunks": int(rule["chunks"]),
        }
        note = (
            f"python -m wam_eval.monitor_bench, {calibration['samples']} chunks of "
            f"{calibration['episodes']} successful held-out episodes (models/README.md, Monitor)"
        )
        with calibrated_copy(bundle, monitor_section(calibration, note)) as tmp:
            eval_eps, eval_info = run_phase(
                "evaluation", tmp, eval_plan, args.domain, overrides, deadline
            )
        info = {"calibration": cal_info, "evaluation": eval_info}
        wall_s = time.monotonic() - t0
    analysis = analyze(cal_eps, eval_eps, calibration, rule, kinds)
    result: dict[str, Any] = {
        "command": "python -m wam_eval.monitor_bench " + " ".join(argv_list),
        "argv": argv_list,
        "plan": plan,
        "cameras": cameras,
        "wall_s": wall_s,
        "machine_start": machine_start,
        "machine_end": machine_info(),
        "runs": info,
        "calibration": calibration,
        "done_rule": rule,
        "analysis": analysis,
        "previous": previous,
        "calibration_episodes": cal_eps,
        "evaluation_episodes": eval_eps,
    }
    write_json(out, _json_safe(result))
    print(f"wrote {out}")
    png = out.with_suffix(".png")
    plot(png, eval_eps, analysis, kinds)
    print(f"wrote {png}")
    text = markdown(result)
    print(text)
    if not args.no_readme:
        write_section(args.readme, BEGIN, END, text, heading=HEADING)
        print(f"updated {args.readme} ({BEGIN} section)")
    if args.calibrate:
        note = (
            f"python -m wam_eval.monitor_bench --calibrate, {calibration['samples']} chunks of "
            f"{calibration['episodes']} successful held-out episodes (models/README.md, Monitor)"
        )
        manifest = bundle / "wam.yaml"
        text = insert_monitor_section(manifest.read_text(), monitor_section(calibration, note))
        check_calibration(yaml.safe_load(text))
        manifest.write_text(text)
        write_json(
            bundle / "eval" / "monitor_calibration.json",
            {
                "latent_mean": calibration["latent_mean"],
                "latent_std": calibration["latent_std"],
                "samples": calibration["samples"],
                "note": note,
            },
        )
        print(f"wrote the calibration into {manifest} and {bundle / 'eval'}")
    return 0


def _json_safe(x: Any) -> Any:
    """NaN and infinities as None (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


if __name__ == "__main__":
    sys.exit(main())
