"""Tests for nnunet_ext.methods.dca.register and ``nnunet-ext register`` (TM-DCA instance optimisation).

Tiny pairs (2D 24 x 20, 3D 10 x 12 x 14), a handful of iterations of the small preset. Bad inputs are rows of
tests/test_bad_input.py.
"""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, map_coordinates

from nnunet_ext.cli import main
from nnunet_ext.methods.dca.register import (
    IOSettings,
    diffusion_regulariser,
    instance_optimise,
    local_ncc,
    register_pair,
    soft_dice_loss,
)
from nnunet_ext.metrics.registration import disp_from_learn2reg, jacobian_determinant, warp_labels
from tests.conftest import tree_hash

nibabel = pytest.importorskip("nibabel")


def blob(shape, centre, radius=3.5):
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    squared = sum((grid[axis] - centre[axis]) ** 2 for axis in range(len(shape)))
    return np.exp(-squared / (2 * radius ** 2)).astype(np.float32)


def texture(shape, seed=0):
    """Smoothed noise: contrast in every 9^n window, so the identity is the optimum of the local NCC (on a smooth blob
    with flat tails it is not: VoxelMorph's eps rewards bringing contrast into low-variance windows)."""
    return gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.0).astype(np.float32)


def write(path, array, spacing, origin=None, direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    if origin is not None:
        image.SetOrigin([float(o) for o in reversed(origin)])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def geometry(path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


# ------------------------------------------------------------------ loss terms
@pytest.mark.parametrize("ndim", [2, 3])
def test_local_ncc_is_voxelmorphs_convolution_form(ndim):
    shape = (1, 1) + (11, 12, 13)[:ndim]
    fixed, warped = torch.rand(shape), torch.rand(shape)
    ones = torch.ones((1, 1) + (9,) * ndim)
    conv = F.conv2d if ndim == 2 else F.conv3d

    def box(x):
        return conv(x, ones, padding=4)

    n = 9 ** ndim
    i_sum, j_sum = box(fixed), box(warped)
    u_i, u_j = i_sum / n, j_sum / n
    cross = box(fixed * warped) - u_j * i_sum - u_i * j_sum + u_i * u_j * n
    i_var = box(fixed * fixed) - 2 * u_i * i_sum + u_i * u_i * n
    j_var = box(warped * warped) - 2 * u_j * j_sum + u_j * u_j * n
    reference = -torch.mean(cross * cross / (i_var * j_var + 1e-5))
    assert local_ncc(fixed, warped).item() == pytest.approx(reference.item(), rel=1e-4)
    image = torch.from_numpy(texture(shape[2:]))[None, None]
    # invariant to scaling (an offset also changes the zero-padded border windows)
    assert local_ncc(image, 3 * image).item() == pytest.approx(local_ncc(image, image).item(), abs=1e-4)
    assert local_ncc(image, image).item() == pytest.approx(-1.0, abs=1e-3)


def test_diffusion_regulariser_and_soft_dice_analytic():
    c = 0.5
    field = torch.zeros(1, 2, 6, 7)
    field[0, 0] = c * torch.arange(6.0).view(6, 1)  # u_0 = c z: forward differences c along axis 0, component 0
    assert diffusion_regulariser(field).item() == pytest.approx((c ** 2 / 2 + 0) / 2)
    one_hot = torch.zeros(1, 2, 4, 4)
    one_hot[0, 0, :2], one_hot[0, 1, 2:] = 1, 1
    assert soft_dice_loss(one_hot, one_hot).item() == pytest.approx(0.0)
    assert soft_dice_loss(one_hot, one_hot.flip(1)).item() == pytest.approx(1.0)


# ------------------------------------------------------------------ the command
def test_outputs_in_3d_have_the_fixed_geometry_and_the_learn2reg_layout(tmp_path):
    shape, spacing = (10, 12, 14), (2.0, 1.5, 1.0)
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    src = tmp_path / "src"
    src.mkdir()
    moving_image = blob(shape, (4.5, 5.5, 6.5)) + 0.1 * texture(shape)
    fixed_image = blob(shape, (4.5, 6.5, 7.5)) + 0.1 * texture(shape, seed=1)
    fixed = write(src / "fix.nii.gz", fixed_image, spacing, (10.0, -5.0, 3.0), direction)
    moving = write(src / "mov.nii.gz", moving_image, spacing, (0.0, 0.0, 0.0))
    moving_seg = write(src / "mov_seg.nii.gz", (moving_image > 0.5).astype(np.float32) * 3, spacing)  # float file
    fixed_seg = write(src / "fix_seg.nii.gz", (fixed_image > 0.5).astype(np.uint8) * 3, spacing)
    before = tree_hash(src)

    record = register_pair(fixed, moving, tmp_path / "out", moving_seg, fixed_seg, IOSettings(iterations=5))

    out = tmp_path / "out"
    assert tree_hash(src) == before
    names = {"warped_mov.nii.gz", "warped_seg_mov.nii.gz", "disp_fix_mov.nii.gz", "jacdet_fix_mov.nii.gz",
             "register.json"}
    assert names <= {p.name for p in out.iterdir()}
    for name in names - {"register.json", "disp_fix_mov.nii.gz"}:
        assert geometry(out / name) == geometry(fixed), name
    field = nibabel.load(str(out / "disp_fix_mov.nii.gz")).get_fdata()
    assert field.shape == (14, 12, 10, 3)  # Learn2Reg 2022+: [X, Y, Z, 3]
    size, disp_spacing, origin, disp_direction = geometry(out / "disp_fix_mov.nii.gz")
    assert (size, disp_spacing, origin) == ((14, 12, 10, 3), (1.0, 1.5, 2.0, 1.0), (3.0, -5.0, 10.0, 0.0))
    assert np.reshape(disp_direction, (4, 4))[:3, :3].ravel().tolist() == list(direction)
    disp = disp_from_learn2reg(field, channel_axis=-1)
    assert disp.shape == (3,) + shape
    # Learn2Reg's evaluation: map_coordinates in nibabel's (x, y, z) space
    moving_labels_xyz = nibabel.load(str(moving_seg)).get_fdata()
    identity = np.stack(np.meshgrid(*[np.arange(n) for n in field.shape[:3]], indexing="ij"))
    l2r_warped = map_coordinates(moving_labels_xyz, identity + field.transpose(3, 0, 1, 2), order=0)
    saved = read(out / "warped_seg_mov.nii.gz")
    assert saved.dtype == np.uint8 and set(np.unique(saved)) <= {0, 3}
    assert np.array_equal(l2r_warped, nibabel.load(str(out / "warped_seg_mov.nii.gz")).get_fdata())
    assert np.array_equal(warp_labels(read(moving_seg), disp), saved)
    np.testing.assert_allclose(read(out / "jacdet_fix_mov.nii.gz"), jacobian_determinant(disp), rtol=1e-5, atol=1e-5)
    assert read(out / "warped_mov.nii.gz").shape == shape
    saved_record = json.loads((out / "register.json").read_text())
    assert saved_record == record
    assert saved_record["settings"]["iterations"] == 5 and len(saved_record["loss"]["curve"]["total"]) == 5
    assert saved_record["settings"]["network"] == "tmdca"
    assert saved_record["settings"]["network_config"]["depths"] == [1, 1, 1]  # the small preset
    assert saved_record["grid"] == {"shape": list(shape), "spacing": list(spacing), "registered_in": "3D"}
    for when in ("before", "after"):
        assert set(saved_record["metrics"][when]) >= {"dice_mean", "hd95_mean", "sdlogj", "ndv_percent"}
    assert saved_record["metrics"]["before"]["sdlogj"] == 0.0  # identity field


def test_a_two_voxel_translation_is_recovered_from_the_command_line(tmp_path, capsys):
    shape, spacing = (24, 20), (1.0, 1.0)
    src = tmp_path / "src"
    src.mkdir()
    moving_image, fixed_image = blob(shape, (10.5, 9.5)), blob(shape, (12.5, 9.5))  # fixed(x) = moving(x - 2 e_0)
    paths = {"f": write(src / "fixed.nii.gz", fixed_image, spacing),
             "m": write(src / "moving.nii.gz", moving_image, spacing),
             "ms": write(src / "moving_seg.nii.gz", (moving_image > 0.5).astype(np.uint8), spacing),
             "fs": write(src / "fixed_seg.nii.gz", (fixed_image > 0.5).astype(np.uint8), spacing)}
    before = tree_hash(src)
    for network, name in (("tmdca", "TM-DCA"), ("convnet", "ConvNet")):
        out = tmp_path / f"out_{network}"
        argv = ["register", "-o", str(out), "--iterations", "30", "--network", network]
        for flag, path in paths.items():
            argv += [f"-{flag}", str(path)]

        assert main(argv) == 0

        assert f"{name} small, 30 iterations" in capsys.readouterr().out
        assert tree_hash(src) == before
        record = json.loads((out / "register.json").read_text())
        assert record["settings"]["network"] == network
        assert record["loss"]["final"]["ncc"] < record["loss"]["initial"]["ncc"] - 0.03, network
        assert record["metrics"]["after"]["dice_mean"] > record["metrics"]["before"]["dice_mean"] + 0.1, network
        disp = disp_from_learn2reg(nibabel.load(str(out / "disp_fixed_moving.nii.gz")).get_fdata(), -1)
        assert disp[0][fixed_image > 0.5].mean() < -1.0, network  # towards u = (-2, 0)
    assert record["settings"]["network_config"] == {"embed_dim": 16, "num_stages": 3, "head_channels": 8}


def test_identical_npz_inputs_give_a_near_zero_field(tmp_path):
    image = texture((24, 20))  # our (y, x) order
    labels = (image > 0).astype(np.uint8)
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "a.npz", vol=image.T, seg=labels.T)  # VoxelMorph's (x, y) order
    np.savez(src / "b.npz", vol_data=image.T)
    before = tree_hash(src)

    record = register_pair(src / "b.npz", src / "a.npz", tmp_path / "out", moving_seg=src / "a.npz",
                           settings=IOSettings(iterations=20))

    assert tree_hash(src) == before
    assert record["field"]["max_abs_voxels"] < 0.05
    assert record["metrics"] is None and record["grid"]["spacing"] == [1.0, 1.0]
    out = tmp_path / "out"
    # inside: unchanged labels (Learn2Reg's map_coordinates(order=0) gives 0 for a sample a hair outside the image)
    assert np.array_equal(read(out / "warped_seg_a.nii.gz")[1:-1, 1:-1], labels[1:-1, 1:-1])
    np.testing.assert_allclose(nibabel.load(str(out / "warped_a.nii.gz")).get_fdata(), image.T, atol=0.05)
    assert geometry(out / "warped_a.nii.gz")[1:3] == ((1.0, 1.0), (0.0, 0.0))


def test_a_single_slice_3d_image_is_registered_in_2d_and_overwrite_replaces_own_output(tmp_path):
    shape, spacing = (1, 24, 20), (3.0, 1.0, 1.0)
    fixed = write(tmp_path / "f.nii.gz", texture(shape), spacing)
    moving = write(tmp_path / "m.nii.gz", texture(shape, seed=1), spacing)
    for _ in range(2):
        record = register_pair(fixed, moving, tmp_path / "out", settings=IOSettings(iterations=2), overwrite=True)
    assert record["grid"]["registered_in"] == "2D"
    field = nibabel.load(str(tmp_path / "out" / "disp_f_m.nii.gz")).get_fdata()
    assert field.shape == (20, 24, 1, 3) and np.all(field[..., 2] == 0)  # [X, Y, Z, 3], no z displacement
    assert read(tmp_path / "out" / "jacdet_f_m.nii.gz").shape == shape


@pytest.mark.parametrize("network", ["tmdca", "convnet"])
def test_diffeomorphic_instance_optimisation_does_not_fold(network):
    fixed, moving = blob((24, 20), (12.5, 9.5)), blob((24, 20), (10.5, 9.5))
    settings = IOSettings(iterations=10, diffeomorphic=True, lambda_reg=0.1, network=network)
    result = instance_optimise(fixed, moving, settings)
    assert result.final["ncc"] < result.history[0]["ncc"]
    assert np.all(jacobian_determinant(result.displacement) > 0)
    assert result.displacement.shape == (2, 24, 20) and result.warped.shape == (24, 20)


@pytest.mark.parametrize("coarse,fine", [((5, 6, 7), (9, 11, 13)), ((4, 6), (7, 11))])
def test_upsampled_field_keeps_an_affine_displacement_exact(coarse, fine):
    """An affine field u(p) = A p + b in coarse voxels is, on the fine grid (corner-aligned), u'(q) = S (A S^-1 q + b)
    with S = diag((n - 1) / (m - 1)): linear interpolation reproduces it exactly."""
    import torch

    from nnunet_ext.methods.dca.register import upsample_field

    generator = np.random.default_rng(0)
    ndim = len(coarse)
    matrix, offset = generator.normal(0, 0.1, (ndim, ndim)), generator.normal(0, 1, ndim)
    scale = np.array([(n - 1) / (m - 1) for n, m in zip(fine, coarse)])

    coarse_points = np.indices(coarse).reshape(ndim, -1)
    coarse_field = (matrix @ coarse_points + offset[:, None]).reshape(ndim, *coarse)
    fine_in_coarse_units = np.indices(fine).reshape(ndim, -1) / scale[:, None]
    expected = (scale[:, None] * (matrix @ fine_in_coarse_units + offset[:, None])).reshape(ndim, *fine)
    upsampled = upsample_field(torch.from_numpy(coarse_field[None]).float(), fine)[0].numpy()
    np.testing.assert_allclose(upsampled, expected, atol=1e-4)
