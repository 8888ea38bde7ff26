"""The metric code of ``python -m wam_eval.monitor_bench`` (no ROS graph): ROC-AUC, the false-alarm
threshold and the detection on synthetic traces, the done rule, and the ``monitor:`` section written
into a wam.yaml (every other byte kept) and carried over by the export (wam_model.manifest)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from wam_eval.monitor_bench import (
    bench_plan,
    calibrate,
    check_calibration,
    choose_done_rule,
    confusion,
    done_flags,
    episode_time,
    false_alarm_threshold,
    first_detection,
    insert_monitor_section,
    monitor_section,
    roc_auc,
    roc_curve,
    round_up,
    z_score,
)
from wam_eval.procs import REPO
from wam_model.manifest import MONITOR_CALIBRATION_JSON, monitor_section_lines, section_span

CAL = {"latent_mean": [0.1, 0.3], "latent_std": [0.05, 0.2], "samples": 42}


def test_auc_of_separable_reversed_and_identical_sets() -> None:
    assert roc_auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0
    assert roc_auc([0.0, 1.0], [2.0, 3.0, 4.0]) == 0.0
    assert roc_auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5
    assert roc_auc([7.0] * 4, [7.0] * 9) == 0.5
    # Ties count one half: P(pos > neg) + P(pos = neg) / 2 = (0.5 + 1) / 2.
    assert roc_auc([1.0, 2.0], [1.0]) == 0.75
    # Non-finite scores are dropped; an empty side gives NaN.
    assert roc_auc([2.0, math.nan], [1.0]) == 1.0
    assert math.isnan(roc_auc([], [1.0])) and math.isnan(roc_auc([1.0], [math.nan]))


def test_auc_equals_the_pairwise_count() -> None:
    pos = [0.3, 1.2, 1.2, 2.5, 0.9, 4.0]
    neg = [0.1, 1.2, 0.5, 2.0, 0.9]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert roc_auc(pos, neg) == pytest.approx(pairs / (len(pos) * len(neg)))
    fpr, tpr = roc_curve(pos, neg)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)


def test_false_alarm_threshold_lets_at_most_five_percent_of_episodes_exceed_it() -> None:
    ten = [0.5, 3.0, 1.0, 2.0, 9.0, 4.0, 1.5, 2.5, 0.7, 6.0]
    assert false_alarm_threshold(ten) == 9.0  # n = 10: none may exceed
    twenty = [float(i) for i in range(20)]
    t = false_alarm_threshold(twenty)
    assert t == 18.0 and sum(x > t for x in twenty) == 1  # n = 20: one may
    for n in (5, 19, 40, 101):
        xs = [float((7 * i) % n) for i in range(n)]
        assert sum(x > false_alarm_threshold(xs) for x in xs) <= 0.05 * n
    assert math.isnan(false_alarm_threshold([math.nan]))


def _row(arrival: float, pred_last: float, score: float, chunk_id: int = 0) -> dict[str, Any]:
    return {"arrival": arrival, "pred_last": pred_last, "score": score, "chunk_id": chunk_id}


def test_detection_on_a_synthetic_trace() -> None:
    t_p = 100.0
    rows = [
        _row(99.5, 99.6, 9.0, 1),  # above, but all of its evidence precedes the perturbation
        _row(100.8, 100.6, 2.0, 2),  # after, below the threshold
        _row(101.9, 101.7, 5.5, 3),  # the detection
        _row(102.9, 102.7, 8.0, 4),
    ]
    d = first_detection(rows, t_p, threshold=5.0)
    assert d is not None and d["chunk_id"] == 3
    assert d["arrival_delay_s"] == pytest.approx(1.9)
    assert d["evidence_delay_s"] == pytest.approx(1.7)
    # Strictly above: a score equal to the threshold is no alarm; NaN scores never are.
    assert (
        first_detection([_row(101.0, 101.0, 5.0), _row(102.0, 102.0, math.nan)], t_p, 5.0) is None
    )
    # Arrival order decides, not list order.
    d2 = first_detection([rows[3], rows[2]], t_p, 5.0)
    assert d2 is not None and d2["chunk_id"] == 3


def test_calibration_z_scores_and_episode_time() -> None:
    cal = calibrate([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0, math.nan]])
    assert cal["latent_mean"] == [2.0, 11.0]
    assert cal["latent_std"] == pytest.approx([1.0, math.sqrt(3.0)], rel=1e-6)
    assert cal["samples"] == 3
    with pytest.raises(ValueError):
        calibrate([[1.0, 1.0, 1.0], [1.0, 2.0]])  # no spread
    with pytest.raises(ValueError):
        calibrate([[1.0], [1.0, 2.0]])
    # The node's score: the largest finite z over the cameras.
    assert z_score([0.2, 0.5], CAL) == pytest.approx(2.0)
    assert z_score([None, 0.7], CAL) == pytest.approx(2.0)
    assert math.isnan(z_score([None, None], CAL))
    # Polls (wall, elapsed): the sim fell 0.5 s behind between them.
    polls = [(1000.0, 0.0), (1002.0, 2.0), (1004.0, 3.5)]
    assert episode_time(1001.0, polls) == pytest.approx(1.0)
    assert episode_time(1004.0, polls) == pytest.approx(3.5)
    assert episode_time(999.0, polls) == pytest.approx(-1.0)
    assert round_up(0.019951) == 0.02 and round_up(0.33551) == 0.336 and round_up(0.0) == 0.0


def test_done_rule_counts_chunks_in_a_row_and_is_chosen_by_f1() -> None:
    motion = [0.5, 0.01, 0.5, 0.01, 0.01, 0.01]
    change = [0.5, 0.01, 0.01, 0.01, 0.01, 0.2]
    assert done_flags(motion, change, 0.02, 0.05, 2) == [False, False, False, False, True, False]
    assert done_flags(motion, change, 0.02, 0.05, 1) == [False, True, False, True, True, False]
    assert not any(done_flags(motion, change, 1.0, 1.0, 0))
    s = confusion([True, True, False, False], [True, False, True, False])
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 1, 1, 1)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5

    # Moving while unsolved, still once solved; a single still chunk comes before the success too.
    def episode(chunks: list[tuple[float, float, bool]]) -> list[dict[str, Any]]:
        return [{"motion": m, "change": c, "solved": solved} for m, c, solved in chunks]

    still, moving = (0.01, 0.02), (0.4, 0.3)
    episodes = [
        episode([(*moving, False), (*still, False), (*still, True), (*still, True)]),
        episode([(*moving, False), (*still, False), (*moving, False), (*still, False)])
        + episode([(*still, True)]),
    ]
    rule = choose_done_rule(episodes)
    assert rule["f1"] == 1.0 and rule["precision"] == 1.0
    assert rule["chunks"] == 2 and rule["motion"] > 0.01 and rule["change"] > 0.02


def test_monitor_section_is_inserted_keeping_every_other_byte(tmp_path: Path) -> None:
    original = (REPO / "models" / "wam_sim" / "wam.yaml").read_text()
    # The committed bundle may carry a calibration already: start from the manifest without it.
    lines = original.splitlines(keepends=True)
    span = section_span(lines)
    base = original if span is None else "".join(lines[: span[0]] + lines[span[1] :])
    assert "latent_shape" in base and "monitor" not in base
    section = monitor_section(CAL, "a test")
    once = insert_monitor_section(base, section)
    assert once.startswith(base) and once[len(base) :] == section
    manifest = yaml.safe_load(once)
    check_calibration(manifest)
    assert manifest["monitor"] == {
        "latent_mean": [0.1, 0.3],
        "latent_std": [0.05, 0.2],
        "samples": 42,
    }
    # Replaced in place: same bytes around it, and idempotent.
    other = monitor_section({**CAL, "latent_mean": [0.2, 0.4]}, "again")
    twice = insert_monitor_section(once, other)
    assert twice == base + other
    assert insert_monitor_section(twice, other) == twice
    # A section in the middle of a file: only its lines change.
    text = "a: 1\nmonitor:\n  latent_mean: [1, 2]\n  latent_std: [1, 1]\nb: 2\n"
    assert insert_monitor_section(text, section) == "a: 1\n" + section + "b: 2\n"
    # A file without a trailing newline.
    assert insert_monitor_section("a: 1", section) == "a: 1\n" + section
    # What the node's loader refuses.
    for bad in ({**CAL, "latent_std": [0.1, 0.0]}, {**CAL, "latent_mean": [0.1]}):
        with pytest.raises(ValueError):
            check_calibration(
                yaml.safe_load(insert_monitor_section(base, monitor_section(bad, "x")))
            )
    with pytest.raises(ValueError):
        check_calibration(yaml.safe_load(base))

    # The export carries the section over: from the manifest it replaces, else from the json.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "wam.yaml").write_text(once)
    assert "\n".join(monitor_section_lines(bundle / "wam.yaml")) + "\n" == section
    (bundle / "wam.yaml").write_text(base)
    assert monitor_section_lines(bundle / "wam.yaml") == []
    saved = bundle / MONITOR_CALIBRATION_JSON
    saved.parent.mkdir()
    saved.write_text(json.dumps({**CAL, "note": "a test"}))
    regenerated = base + "\n".join(monitor_section_lines(bundle / "wam.yaml")) + "\n"
    assert regenerated == once


def test_plan_keeps_calibration_and_evaluation_seeds_apart() -> None:
    cal, ev = bench_plan(2, 2, ["cube_moved", "camera_frozen"], ["reach", "push"])
    assert len(cal) == 4 and len(ev) == 4 + 2 * 4
    assert not {e.seed for e in cal} & {e.seed for e in ev}
    assert len({(e.group, e.seed) for e in ev}) == len(ev)
    frozen = [e for e in ev if e.group == "camera_frozen"]
    assert {e.camera for e in frozen} == {"exterior", "wrist"}
    assert all(e.camera == "" for e in ev if e.group != "camera_frozen")
    assert all(e.perturbed == (e.group not in ("calibration", "normal")) for e in cal + ev)
