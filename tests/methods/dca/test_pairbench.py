"""Tests for ``python -m nnunet_ext.methods.dca.pairbench``: one pair, one method, a benchmark JSON.

Tiny synthetic ``.npz`` pairs (16 x 20 x 24, a shifted blob with two nested labels, VoxelMorph's (x, y, z) layout);
the real brain pair of ../shared/data runs in a smoke test marked slow (skipped when the folder is absent).
"""
import json
import re
import sys

import numpy as np
import pytest

from nnunet_ext.methods.dca.pairbench import main
from tests.conftest import shared_data, tree_hash

SHAPE = (16, 20, 24)  # our (z, y, x)
SUMMARY = ("dice", "hd95", "sdlogj", "negjac_pct", "ndv_pct", "seconds", "dice_before")


def blob(centre, radius=4.0):
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij"))
    return np.exp(-sum((grid[a] - centre[a]) ** 2 for a in range(3)) / (2 * radius ** 2)).astype(np.float32)


@pytest.fixture
def pair(tmp_path):
    """``{a, b, labels}``: a.npz / b.npz hold ``vol`` and ``seg`` (labels 1 and 2), labels.npz ``labels``."""
    src = tmp_path / "src"
    src.mkdir()
    for name, centre in (("a", (8.0, 10.0, 12.0)), ("b", (8.0, 11.5, 10.5))):
        image = blob(centre)
        seg = (image > 0.5).astype(np.uint8) + (image > 0.85)
        np.savez(src / f"{name}.npz", vol=image.T, seg=seg.T)  # VoxelMorph's (x, y, z) order
    np.savez(src / "labels.npz", labels=np.array([1, 2]))
    return {"a": src / "a.npz", "b": src / "b.npz", "labels": src / "labels.npz", "src": src}


def argv(pair, out, method="tmdca_io", *extra, segs=True):
    args = ["--method", method, "--fixed", str(pair["a"]), "--moving", str(pair["b"]), "-o", str(out), *extra]
    if segs:
        args += ["--fixed_seg", str(pair["a"]), "--moving_seg", str(pair["b"]), "--labels", str(pair["labels"])]
    return args


def test_tmdca_io_both_directions_writes_means_per_case_and_directions(pair, tmp_path, capsys):
    out = tmp_path / "tmdca.json"
    before = tree_hash(pair["src"])

    assert main(argv(pair, out, "tmdca_io", "--both_directions", "--iterations", "2", "--preset", "small",
                     "--device", "cpu")) == 0

    assert tree_hash(pair["src"]) == before
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["tmdca_io forward", "tmdca_io backward"]
    result = json.loads(out.read_text())
    for key in SUMMARY + ("seconds_per_iteration",):
        assert isinstance(result[key], float), key
    assert 0 <= result["dice_before"] < 1 and 0 <= result["dice"] <= 1 and result["seconds"] > 0
    assert set(result["per_case"]) == {f"{d}/label_{i}" for d in ("forward", "backward") for i in (1, 2)}
    assert set(result["per_case"]["forward/label_1"]) == {"Dice", "HD95"}
    forward, backward = result["directions"]["forward"], result["directions"]["backward"]
    assert (forward["fixed"], forward["moving"]) == (str(pair["a"]), str(pair["b"]))
    assert (backward["fixed"], backward["moving"]) == (str(pair["b"]), str(pair["a"]))
    assert result["dice"] == pytest.approx((forward["dice"] + backward["dice"]) / 2)
    assert result["per_case"]["backward/label_2"]["Dice"] == backward["dice_per_label"]["2"]
    # the unregistered Dice is symmetric; the mean over labels is what the label entries say
    assert forward["dice_before"] == pytest.approx(backward["dice_before"])
    assert forward["dice_before"] == pytest.approx(np.mean(list(forward["dice_before_per_label"].values())))
    assert forward["parameters"] > 0 and forward["seconds_per_iteration"] > 0
    assert set(forward["loss_final"]) == {"ncc", "diffusion", "total"}
    assert result["method"] == "tmdca_io" and result["settings"]["network"] == "tmdca"
    assert result["settings"]["iterations"] == 2 and result["settings"]["network_config"]["embed_dim"] == 16
    assert result["labels"] == [1, 2] and result["grid"] == {"shape": list(SHAPE), "spacing": [1.0, 1.0, 1.0]}
    provenance = result["provenance"]
    assert provenance["versions"]["torch"] and "antspyx" in provenance["versions"]
    assert provenance["device"].startswith("cpu") and provenance["threads"]["torch"] >= 1


def test_convnet_io_without_segmentations_reports_field_metrics_only(pair, tmp_path):
    out = tmp_path / "convnet.json"
    assert main(argv(pair, out, "convnet_io", "--iterations", "3", "--threads", "1", segs=False)) == 0
    result = json.loads(out.read_text())
    assert result["dice"] is None and result["dice_before"] is None and result["per_case"] == {}
    assert result["sdlogj"] >= 0 and result["negjac_pct"] >= 0 and result["ndv_pct"] >= 0
    assert list(result["directions"]) == ["forward"] and result["settings"]["network"] == "convnet"
    assert result["provenance"]["threads"]["torch"] == 1


def test_syn_matches_ants_own_label_warp(pair, tmp_path):
    pytest.importorskip("ants", reason="antspyx (extra registration-bench) is not installed")
    out = tmp_path / "syn.json"
    assert main(argv(pair, out, "syn")) == 0
    result = json.loads(out.read_text())
    forward = result["directions"]["forward"]
    assert forward["ants_nearest_neighbour_agreement"] > 0.999
    assert result["dice"] > result["dice_before"] + 0.2
    assert result["settings"]["reg_iterations"] == [40, 20, 0] and result["provenance"]["threads"]["itk"] == 1
    assert "seconds_per_iteration" not in result


@pytest.mark.parametrize("extra, segs, error", [
    (["--method", "demons"], True, r"argument --method: invalid choice: 'demons'"),
    (["--iterations", "0"], True, r"--iterations 0 applies to --method trained only"),
    (["--iterations", "-2"], True, r"--iterations must be >= 0, got -2"),
    (["--model", "somewhere"], True, r"--model goes with --method trained"),
    (["--downsample", "0"], True, r"--downsample must be an integer >= 1, got 0"),
    (["--preset", "huge"], True, r"--preset huge: unknown TM-DCA preset"),
    (["--device", "tpu"], True, r"--device must be cpu or cuda, got 'tpu'"),
    (["--threads", "0"], True, r"--threads must be >= 1, got 0"),
    (["--fixed_seg", "{a}"], False, r"--fixed_seg and --moving_seg go together"),
    (["--labels", "{labels}"], False, r"--labels needs --fixed_seg and --moving_seg"),
    (["--labels", "{a}"], True, r"--labels .*a\.npz has no array 'labels' \(arrays: vol, seg\)"),
    (["--moving", "{missing}"], True, r"missing file: .*nope\.npz"),
    (["--moving", "{small}"], True,
     r"shape \(16, 20, 24\) but moving image \(--moving\) .*small\.npz has shape \(16, 20, 23\)"),
    (["--method", "syn", "--device", "cuda"], True, r"--method syn runs ANTs on the CPU"),
    (["--method", "syn", "--syn_metric", "MI"], True, r"syn_metric must be one of mattes, CC, meansquares, demons"),
    (["--method", "syn", "--syn_iterations", "0", "0"], True, r"SyN iterations must be integers >= 0, not all 0"),
], ids=["method", "iterations", "negative_iterations", "model_without_trained", "downsample", "preset",
        "device", "threads", "one_seg", "labels_without_segs", "labels_key",
        "missing_moving", "shape_mismatch", "syn_on_cuda", "syn_metric", "syn_iterations"])
def test_bad_arguments_exit_2_with_one_line(pair, tmp_path, capsys, extra, segs, error):
    small = pair["src"] / "small.npz"
    np.savez(small, vol=np.zeros(SHAPE[::-1], np.float32)[:-1])
    names = {"a": pair["a"], "labels": pair["labels"], "missing": pair["src"] / "nope.npz", "small": small}
    extra = [e.format(**names) for e in extra]
    out = tmp_path / "out.json"
    before = tree_hash(pair["src"])
    args = argv(pair, out, "tmdca_io", segs=segs)
    for flag in ("--method", "--moving"):  # a flag given again replaces the default one
        if flag in extra:
            args[args.index(flag) + 1] = extra.pop(extra.index(flag) + 1)
            extra.remove(flag)

    assert main(args + extra) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m nnunet_ext.methods.dca.pairbench: error: ")
    assert re.search(error, err), err
    assert not out.exists() and tree_hash(pair["src"]) == before


def test_output_folder_input_file_and_missing_antspyx_are_refused(pair, tmp_path, capsys, monkeypatch):
    assert main(argv(pair, tmp_path, "tmdca_io")) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(argv(pair, pair["labels"], "tmdca_io")) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ants", None)  # "import ants" raises ImportError
    assert main(argv(pair, tmp_path / "syn.json", "syn")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nnunet-ext[registration-bench]" in err
    assert not (tmp_path / "syn.json").exists()


@pytest.mark.slow
def test_real_brain_pair_smoke(tmp_path):
    """The real pair (../shared/data/brain_mri_pair), one ConvNet IO step: the unregistered Dice over the 30 labels is
    the documented 0.5224 and every label has an entry. The step runs at 1/4 resolution (a full-resolution step
    costs minutes on a CPU); the field is upsampled to the full grid, where every Dice is measured."""
    folder = shared_data("brain_mri_pair")
    out = tmp_path / "real.json"
    assert main(["--method", "convnet_io", "--fixed", str(folder / "subject_vxm.npz"),
                 "--moving", str(folder / "subject_l2r_vol.npz"), "--fixed_seg", str(folder / "subject_vxm.npz"),
                 "--moving_seg", str(folder / "subject_l2r_seg.npz"), "--labels", str(folder / "labels.npz"),
                 "--iterations", "1", "--downsample", "4", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dice_before"] == pytest.approx(0.5224, abs=5e-5)
    assert len(result["per_case"]) == 30
    assert result["grid"]["shape"] == [224, 192, 160]  # the npz arrays are (x, y, z): ours are (z, y, x)
    # one step barely moves anything (the 1/4-resolution field's displacements grow 4x with its upsampling)
    assert result["dice"] == pytest.approx(result["dice_before"], abs=0.05)
