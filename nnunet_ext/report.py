"""Human-readable results: a Dice table for the terminal and a report folder (markdown + PNG overlays)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ext.imageio import read_image

METRICS = ("Dice", "IoU", "PPV", "SEN", "HD95", "ASD")


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def results_table(summary: dict, label_names: dict[str, str] | None = None) -> str:
    """Markdown table: one row per case and label, then the mean per label (from an evaluate summary)."""
    label_names = label_names or {}
    head = "| case | label | " + " | ".join(METRICS) + " |\n|---|---|" + "---|" * len(METRICS)
    rows = []
    for entry in summary["metric_per_case"]:
        case = Path(entry["reference_file"]).name.split(".")[0]
        for label, m in entry["metrics"].items():
            rows.append(f"| {case} | {label_names.get(label, label)} | "
                        + " | ".join(_fmt(m.get(k)) for k in METRICS) + " |")
    for label, m in summary["mean"].items():
        rows.append(f"| **mean** | {label_names.get(label, label)} | "
                    + " | ".join(_fmt(m.get(k)) for k in METRICS) + " |")
    return "\n".join([head] + rows)


def overlay_png(image_file: Path, reference_file: Path, prediction_file: Path, out_png: Path, title: str) -> None:
    """Axial slice with the most reference foreground: image in grey, reference (green) and prediction (red)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, _ = read_image(image_file)
    ref, _ = read_image(reference_file)
    pred, _ = read_image(prediction_file)
    if image.ndim == 3:
        z = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
        image, ref, pred = image[z], ref[z], pred[z]
        title = f"{title} (slice {z})"
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(image, cmap="gray")
    if ref.any():
        ax.contour(ref > 0, levels=[0.5], colors="lime", linewidths=1.2)
    if pred.any():
        ax.contour(pred > 0, levels=[0.5], colors="red", linewidths=1.2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def write_report(folder: Path, title: str, summary: dict, image_dir: Path, ref_dir: Path, pred_dir: Path,
                 display_channel: int, facts: Sequence[tuple[str, str]], label_names: dict[str, str]) -> str:
    """Write ``README.md``, ``summary.json`` and one overlay PNG per case into ``folder``; return the table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = results_table(summary, label_names)
    lines = [f"# {title}", "", *[f"- {k}: {v}" for k, v in facts], "", "## Test-set metrics", "", table, "",
             "HD95/ASD in mm; n/a = undefined (an empty mask, see nnunet_ext.metrics).", "",
             "## Overlays (green: reference, red: prediction)", ""]
    for entry in summary["metric_per_case"]:
        case = Path(entry["reference_file"]).name.split(".")[0]
        png = folder / f"{case}.png"
        overlay_png(image_dir / f"{case}_{display_channel:04d}.nii.gz", ref_dir / f"{case}.nii.gz",
                    pred_dir / f"{case}.nii.gz", png, case)
        lines.append(f"![{case}]({png.name})")
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return table
