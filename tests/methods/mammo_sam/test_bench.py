"""Tests of nnunet_ext.methods.mammo_sam.bench without a trained model (the scoring of a real model runs in
test_integration.py, on the models it trains): camouflaged cases from the phantom's extras, refusals."""
from __future__ import annotations

import pytest

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from nnunet_ext.methods.mammo_sam import bench


def test_camouflaged_cases_are_the_test_cases_with_a_nonempty_extras_mask(tmp_path):
    from nnunet_ext.synth.cli import synthesize

    (raw,) = synthesize("mammo_2d", 373, cases=1, test_cases=8, seed=3, raw=str(tmp_path),
                        options={"shape": (64, 48), "no_mass_fraction": 0.0})
    expected = {path.name[:-len("_camouflaged.nii.gz")] for path in (raw / "extrasTs").iterdir()
                if read_image(path)[0].any()}
    assert bench.camouflaged_cases(raw) == expected
    assert 0 < len(expected) < 8  # the seed gives both kinds, so the selection is tested both ways


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="not an nnU-Net model folder"):
        bench._model_identity(tmp_path)


def test_a_set_without_test_images_is_refused(tmp_path):
    model = tmp_path / "Dataset001_X" / "T__P__2d"
    model.mkdir(parents=True)
    (model / "plans.json").write_text("{}")
    assert bench.main(["--model", str(model), "--set", "a", str(tmp_path / "nope"), "-o", str(tmp_path / "o.json")]) \
        == 2
