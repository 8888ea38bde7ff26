"""The optional ``monitor:`` section of a bundle's wam.yaml (docs/bundle_format.md, "Monitor
calibration"), kept across a re-export. No torch: the bench's tests import it.

``python -m wam_eval.monitor_bench --calibrate`` measures the calibration in the simulator and
writes it into the manifest (and into ``eval/monitor_calibration.json`` next to it);
``wam_model.export`` regenerates the manifest from the checkpoint and appends what
``monitor_section_lines`` finds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

# The section's comment line and its span: the export kit's, which keeps the section on re-export too.
from wam_export.manifest import CALIBRATION_COMMENT
from wam_export.manifest import monitor_span as section_span

__all__ = [
    "CALIBRATION_COMMENT",
    "MONITOR_CALIBRATION_JSON",
    "monitor_section_lines",
    "section_span",
]

# Next to wam.yaml: the bench's copy of the calibration it wrote into the bundle.
MONITOR_CALIBRATION_JSON = Path("eval") / "monitor_calibration.json"


def _floats(xs: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(x):.6g}" for x in xs) + "]"


def monitor_section_lines(manifest: Path) -> list[str]:
    """The calibration to keep when ``manifest`` is rewritten: its ``monitor:`` section verbatim
    when it has one, else the one in ``eval/monitor_calibration.json`` next to it, else nothing."""
    if manifest.exists():
        lines = manifest.read_text().splitlines()
        span = section_span(lines)
        if span is not None:
            return lines[span[0] : span[1]]
    saved = manifest.parent / MONITOR_CALIBRATION_JSON
    if not saved.exists():
        return []
    c = json.loads(saved.read_text())
    note = c.get("note") or f"carried over from {MONITOR_CALIBRATION_JSON}"
    return [
        f"{CALIBRATION_COMMENT}: {note}",
        "monitor:",
        f"  latent_mean: {_floats(c['latent_mean'])}",
        f"  latent_std: {_floats(c['latent_std'])}",
        f"  samples: {int(c.get('samples', 0))}",
    ]
