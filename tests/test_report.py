"""nnunet_ext.report: slice choice for overlays, the results table and the report folder."""
import json

import numpy as np
import pytest

from nnunet_ext.imageio import write_image
from nnunet_ext.report import results_table, slices_to_show, write_report


@pytest.mark.parametrize("ref_slices,pred_slices,count,expected", [
    ([4, 5], [8], 3, [4, 5, 8]),             # no more foreground slices than panels: all of them
    ([1, 2, 3, 4, 5], [9], 3, [2, 3, 5]),    # spread over the 6 foreground slices, never an empty gap slice
    ([6], [6], 3, [6]),                      # a single slice
    ([], [], 2, [3, 6]),                     # no foreground: spread over the volume (0..9)
])
def test_slices_cover_the_foreground(ref_slices, pred_slices, count, expected):
    reference = np.zeros((10, 4, 4), np.uint8)
    prediction = np.zeros_like(reference)
    reference[ref_slices, 1, 1] = 1
    prediction[pred_slices, 2, 2] = 1
    assert slices_to_show(reference, prediction, count) == expected


def test_mean_row_reports_undefined_distances():
    summary = {"metric_per_case": [], "mean": {"1": {"Dice": 0.5, "HD95": 3.0, "ASD": 1.0,
                                                     "n_distance_undefined": 2}}}
    assert "| **mean** | 1 | 0.500 | n/a | n/a | n/a | 3.000 (2 undef.) | 1.000 (2 undef.) |" in results_table(summary)


def test_report_folder_has_table_curve_and_overlays(tmp_path):
    images, labels, preds = (tmp_path / n for n in ("images", "labels", "preds"))
    for folder in (images, labels, preds):
        folder.mkdir()
    label = np.zeros((6, 8, 8), np.uint8)
    label[2:4, 2:5, 2:5] = 1
    write_image(images / "c1_0001.nii.gz", np.random.default_rng(0).random(label.shape).astype(np.float32),
                (3.0, 1.0, 1.0))
    write_image(labels / "c1.nii.gz", label, (3.0, 1.0, 1.0))
    write_image(preds / "c1.nii.gz", label, (3.0, 1.0, 1.0))
    summary = {"metric_per_case": [{"reference_file": str(labels / "c1.nii.gz"),
                                    "metrics": {"1": {"Dice": 1.0, "HD95": 0.0}}}],
               "mean": {"1": {"Dice": 1.0, "HD95": 0.0}}}
    curve = tmp_path / "progress.png"
    curve.write_bytes(b"\x89PNG fake")
    table = write_report(tmp_path / "report", "t", summary, images, labels, preds, display_channel=1,
                         facts=[("k", "v")], label_names={"1": "lesion"}, training_curve=curve)
    assert table == results_table(summary, {"1": "lesion"}) and "| **mean** | lesion | 1.000 |" in table
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "![training curve](training_curve.png)" in readme and "![c1](c1.png)" in readme
    assert (tmp_path / "report" / "c1.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["mean"]["1"]["Dice"] == 1.0
