"""Distractor false positives: predicted lesion millilitres inside the enhancing non-tumour tissue."""
import json

import numpy as np

from nnunet_ext.imageio import write_image
from nnunet_ext.methods.contrastive.bench import distractor_false_positive_ml, main


def test_volume_counts_only_predicted_voxels_inside_the_mask():
    prediction, mask = np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8)
    prediction[0, :2, :2] = 1   # 4 voxels, 2 of them in the mask
    prediction[1, 3, 3] = 2     # any label counts
    mask[0, 0, :] = 1
    mask[1, 3, 3] = 1
    assert distractor_false_positive_ml(prediction, mask, (2.0, 1.0, 0.5)) == 3 * 1.0 / 1000.0


def test_cli_writes_per_case_and_mean(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "m").mkdir()
    for i, n in enumerate((0, 8)):
        prediction = np.zeros((2, 4, 4), np.uint8)
        prediction.flat[:n] = 1
        write_image(tmp_path / "p" / f"test_{i:04d}.nii.gz", prediction, (1.0, 1.0, 1.0))
        write_image(tmp_path / "m" / f"test_{i:04d}_distractor.nii.gz", np.ones((2, 4, 4), np.uint8), (1.0, 1.0, 1.0))
    assert main(["distractor-fp", "-p", str(tmp_path / "p"), "-m", str(tmp_path / "m"), "-o",
                 str(tmp_path / "fp.json")]) == 0
    result = json.loads((tmp_path / "fp.json").read_text())
    assert result["per_case"]["test_0001"]["distractor_fp_ml"] == 0.008
    assert result["distractor_fp_ml"] == 0.004
