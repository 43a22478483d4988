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
        undefined = m.get("n_distance_undefined", 0)
        # a NaN-skipping distance mean must say how many cases it left out (missed or spurious lesions)
        cells = [_fmt(m.get(k)) + (f" ({undefined} undef.)" if undefined and k in ("HD95", "ASD") else "")
                 for k in METRICS]
        rows.append(f"| **mean** | {label_names.get(label, label)} | " + " | ".join(cells) + " |")
    return "\n".join([head] + rows)


def slices_to_show(reference: np.ndarray, prediction: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` axial slices spread evenly over the slices where the reference or the prediction has
    foreground (over the whole volume when both are empty), so every panel shows an outline."""
    candidates = np.flatnonzero(((reference > 0) | (prediction > 0)).reshape(reference.shape[0], -1).any(1))
    if candidates.size == 0:
        candidates = np.arange(reference.shape[0])
    if candidates.size <= count:
        return [int(z) for z in candidates]
    positions = np.linspace(0, candidates.size - 1, count + 2)[1:-1]
    return sorted({int(candidates[int(round(p))]) for p in positions})


def overlay_png(image_file: Path, reference_file: Path, prediction_file: Path, out_png: Path, title: str,
                slices: int = 3) -> None:
    """Image in grey with the reference (green) and prediction (red) outlines; 3D images show ``slices`` axial
    slices spread over the foreground's extent."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, _ = read_image(image_file)
    ref, _ = read_image(reference_file)
    pred, _ = read_image(prediction_file)
    if image.ndim == 3:
        zs = slices_to_show(ref, pred, slices)
        panels = [(image[z], ref[z], pred[z], f"slice {z}") for z in zs]
    else:
        panels = [(image, ref, pred, "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), dpi=100, squeeze=False)
    for ax, (img, r, p, label) in zip(axes[0], panels):
        ax.imshow(img, cmap="gray")
        if r.any():
            ax.contour(r > 0, levels=[0.5], colors="lime", linewidths=1.0)
        if p.any():
            ax.contour(p > 0, levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def write_report(folder: Path, title: str, summary: dict, image_dir: Path, ref_dir: Path, pred_dir: Path,
                 display_channel: int, facts: Sequence[tuple[str, str]], label_names: dict[str, str],
                 training_curve: Path | None = None) -> str:
    """Write ``README.md``, ``summary.json``, nnU-Net's training curve (``progress.png`` of the fold, if given) and
    one overlay PNG per case into ``folder``; return the table."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    table = results_table(summary, label_names)
    lines = [f"# {title}", "", *[f"- {k}: {v}" for k, v in facts], "", "## Test-set metrics", "", table, "",
             "HD95/ASD in mm; n/a = undefined (an empty mask, see nnunet_ext.metrics).", ""]
    if training_curve is not None and Path(training_curve).is_file():
        shutil.copyfile(training_curve, folder / "training_curve.png")
        lines += ["## Training curve (nnU-Net's progress.png: losses, pseudo Dice, learning rate)", "",
                  "![training curve](training_curve.png)", ""]
    lines += ["## Overlays (green: reference, red: prediction)", ""]
    for entry in summary["metric_per_case"]:
        case = Path(entry["reference_file"]).name.split(".")[0]
        png = folder / f"{case}.png"
        overlay_png(image_dir / f"{case}_{display_channel:04d}.nii.gz", ref_dir / f"{case}.nii.gz",
                    pred_dir / f"{case}.nii.gz", png, case)
        lines.append(f"![{case}]({png.name})")
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return table
