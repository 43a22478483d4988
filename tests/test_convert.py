"""Tests of nnunet_ext.convert: listing without importing converters, forwarding to a converter, one-line errors."""
import subprocess
import sys

import numpy as np
import pytest

from nnunet_ext.cli import main
from nnunet_ext.convert import available_converters

CONVERTERS = ["bhsd", "brats2023", "breast_mri_nact_pilot", "camus", "cbis_ddsm", "dce_nifti_folder", "hc18",
              "image_folder_2d", "inbreast", "mama_mia", "oasis_learn2reg", "registration_pairs"]


def test_every_converter_is_found_with_its_docstring_line():
    converters = available_converters()
    assert list(converters) == CONVERTERS
    assert converters["breast_mri_nact_pilot"].startswith("Convert TCIA Breast-MRI-NACT-Pilot (DICOM)")
    assert converters["dce_nifti_folder"].startswith("Convert a folder of DCE-MRI NIfTI files")
    assert converters["hc18"].startswith("Convert the HC18 fetal-head ultrasound challenge data")
    assert converters["bhsd"].startswith("Convert the BHSD brain-hemorrhage CT release")
    assert converters["oasis_learn2reg"].startswith("Convert the Learn2Reg OASIS brain-MRI download")
    assert converters["registration_pairs"].startswith("Convert a folder of 3D images (and labels) with registration")
    assert converters["inbreast"].startswith("Convert INbreast")
    assert converters["cbis_ddsm"].startswith("Convert CBIS-DDSM")
    assert converters["mama_mia"].startswith("Convert MAMA-MIA")


@pytest.mark.parametrize("argv", [["convert"], ["convert", "-h"]])
def test_listing_names_every_converter(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # -h exits through argparse
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0
    for name, description in available_converters().items():
        assert f"  {name}  " in out or f"  {name} " in out
        assert description in out


def test_listing_imports_no_converter():
    script = ("import sys; from nnunet_ext.cli import main; main(['convert']); "
              "print(sorted(m for m in sys.modules if m.startswith(('pydicom', 'SimpleITK', 'torch', "
              "'nnunet_ext.datasets_conversion.'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_converter_lists_the_choices(capsys):
    assert main(["convert", "kits23", "-i", "x"]) == 2
    assert capsys.readouterr().err.strip() == ("nnunet-ext convert: error: unknown converter 'kits23' (choose from "
                                               "bhsd, brats2023, breast_mri_nact_pilot, camus, cbis_ddsm, dce_nifti_folder, "
                                               "hc18, image_folder_2d, inbreast, mama_mia, oasis_learn2reg, "
                                               "registration_pairs)")


def test_converter_help_shows_its_own_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "breast_mri_nact_pilot", "-h"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out.startswith("usage: nnunet-ext convert breast_mri_nact_pilot") and "--n_post" in out


def test_convert_runs_the_converter_with_its_options(tmp_path, capsys):
    from nnunet_ext.imageio import write_image

    src, raw = tmp_path / "src", tmp_path / "raw"
    src.mkdir()
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        pre = rng.uniform(0, 100, (4, 8, 8)).astype(np.float32)
        write_image(src / f"{case}_pre.nii.gz", pre, (2.0, 1.0, 1.0))
        write_image(src / f"{case}_post1.nii.gz", pre + 50, (2.0, 1.0, 1.0))
        label = np.zeros((4, 8, 8), np.uint8)
        label[1:3, 2:5, 2:5] = 1
        write_image(src / f"{case}_seg.nii.gz", label, (2.0, 1.0, 1.0))
    assert main(["convert", "dce_nifti_folder", "-i", str(src), "-d", "71", "--pre_only_id", "72",
                 "--raw", str(raw), "--test_fraction", "0", "--name", "Tiny"]) == 0
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset071_Tiny", "Dataset072_TinyPreOnly"]
    assert sorted(p.name for p in (raw / "Dataset071_Tiny" / "imagesTr").iterdir()) == [
        "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"]
    assert "wrote" in capsys.readouterr().out
