"""``nnunet-ext hcnet cluster`` (Sect. 2.1): the map dataset it writes, its ROIs, and its one-line refusals of bad
input with nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from nnunet_ext.methods.hcnet import vqvae
from nnunet_ext.methods.hcnet.cluster import cluster_dataset

TINY = vqvae.VQVAEPreset(hidden=(16,), latent_dim=3, epochs=3, lr=5e-3, lr_halving_epochs=2, batch_size=1024,
                         max_training_points=5000)


@pytest.fixture(scope="module")
def dce_raw(tmp_path_factory) -> Path:
    from nnunet_ext.synth.cli import synthesize

    raw = tmp_path_factory.mktemp("raw")
    synthesize("breast_dce", 51, cases=3, test_cases=1, raw=raw, labeled_cases=2,
               options={"shape": (8, 24, 24), "n_post": 3, "masks_in_extras": True})
    return raw


@pytest.fixture
def raw(dce_raw, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(dce_raw, copy)
    monkeypatch.setenv("nnUNet_raw", str(copy))
    monkeypatch.setitem(vqvae.PRESETS, "tiny", TINY)
    return copy


def _cluster(**options) -> Path:
    return cluster_dataset(51, 52, **{"n_clusters": 3, "preset": "tiny", "log": lambda *a: None, **options})


def test_map_dataset_holds_pre_images_and_clusters_inside_the_breast(raw):
    out = _cluster()
    source = raw / "Dataset051_BreastDCE"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "cluster_1": 1, "cluster_2": 2, "cluster_3": 3}
    assert meta["numTraining"] == 3 and meta["hcnet_clustering"]["time_points"] == 4
    for split, case in (("Tr", "case_0002"), ("Ts", "test_0000")):  # case_0002: unlabelled; test: assigned
        label, _ = read_image(out / f"labels{split}" / f"{case}.nii.gz")
        breast, _ = read_image(source / f"extras{split}" / f"{case}_breast.nii.gz")
        assert np.array_equal(label > 0, breast > 0) and set(np.unique(label[breast > 0])) <= {1, 2, 3}
        written = sitk.ReadImage(str(out / f"labels{split}" / f"{case}.nii.gz"))
        pre = sitk.ReadImage(str(source / f"images{split}" / f"{case}_0000.nii.gz"))
        assert written.GetSpacing() == pre.GetSpacing() and written.GetOrigin() == pre.GetOrigin()
    summary = json.loads((out / "clustering" / "clustering.json").read_text())
    assert {"sse", "cpn", "spt", "dbn", "tvr_p", "ari", "nmi", "used_clusters", "history"} <= set(summary)
    assert summary["training_voxels"] == sum(
        int((read_image(p)[0] > 0).sum()) for p in (source / "extrasTr").glob("*_breast.nii.gz"))


def test_cluster_ids_follow_early_enhancement(raw):
    out = _cluster()
    curves = np.array(json.loads((out / "clustering" / "clustering.json").read_text())["mean_curves"])
    used = curves.any(1)
    assert np.all(np.diff((curves[:, 1] - curves[:, 0])[used]) >= 0)  # cluster 1 enhances least


@pytest.mark.parametrize("options", [{"kmeans": True}, {"roi": "image"}, {"normalization": "voxel"},
                                     {"literal": True}])
def test_options_write_a_valid_map(raw, options):
    out = _cluster(**options)
    label, _ = read_image(out / "labelsTr" / "case_0000.nii.gz")
    if options.get("roi") == "image":
        assert (label > 0).all()
    assert 1 <= label[label > 0].min() and label.max() <= 3


def test_box_roi_needs_labels(raw):
    with pytest.raises(UserInputError, match=r"case case_0002: --roi box needs a tumour label"):
        _cluster(roi="box")  # case_0002 is unlabelled
    assert not list(raw.glob("Dataset052_*"))


def test_box_is_the_label_bounding_box_grown_by_the_margin():
    from nnunet_ext.methods.hcnet.cluster import _box

    label = np.zeros((10, 12, 12), bool)
    label[4:6, 5:7, 2:3] = True
    box = _box(label, spacing=(3.0, 1.0, 2.0), margin_mm=4.0)  # grows ceil(4/3)=2, 4, 2 voxels, clipped at 0
    expected = np.zeros_like(label)
    expected[2:8, 1:11, 0:5] = True
    np.testing.assert_array_equal(box, expected)


def _refused(raw: Path, match: str, **options) -> None:
    before = sorted(str(p.relative_to(raw)) for p in raw.rglob("*"))
    with pytest.raises(UserInputError, match=match):
        _cluster(**options)
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*")) == before  # nothing written, nothing removed


@pytest.mark.parametrize("options, match", [
    ({"n_clusters": 1}, r"^-K must be >= 2"),
    ({"roi": "lung"}, r"^--roi must be one of"),
    ({"normalization": "global"}, r"^--normalization must be one of"),
    ({"preset": "huge"}, r"^--preset must be one of"),
])
def test_bad_options(raw, options, match):
    _refused(raw, match, **options)


def test_existing_map_needs_overwrite(raw):
    _cluster()
    _refused(raw, r"dataset id 52 already exists .*pass --overwrite")
    _cluster(overwrite=True)


def test_missing_phase_names_the_case(raw):
    (raw / "Dataset051_BreastDCE" / "imagesTr" / "case_0001_0002.nii.gz").unlink()
    _refused(raw, r"case case_0001: missing phase .*case_0001_0002\.nii\.gz")


def test_phase_off_the_grid_names_the_case(raw):
    path = raw / "Dataset051_BreastDCE" / "imagesTr" / "case_0000_0001.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(image, str(path))
    _refused(raw, r"case case_0000: phase .*case_0000_0001\.nii\.gz is not on the pre-contrast grid \(origin")


def test_empty_roi_names_the_case(raw):
    path = raw / "Dataset051_BreastDCE" / "extrasTr" / "case_0001_breast.nii.gz"
    mask = sitk.ReadImage(str(path))
    sitk.WriteImage(_zeros_like(mask), str(path))
    _refused(raw, r"case case_0001: empty ROI \(--roi breast\)")


def _zeros_like(image):
    zeros = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8))
    zeros.CopyInformation(image)
    return zeros


def test_single_time_point_dataset_is_refused(raw, tmp_path):
    from nnunet_ext.synth.cli import synthesize

    synthesize("breast_dce", 53, cases=1, test_cases=0, raw=raw, pre_only_id=54, options={"shape": (8, 16, 16)})
    with pytest.raises(UserInputError, match=r"has 1 channel\(s\): TIC clustering needs .* \(2 time points or "):
        cluster_dataset(54, 55, n_clusters=3, preset="tiny", log=lambda *a: None)
    assert not list(raw.glob("Dataset055_*"))
