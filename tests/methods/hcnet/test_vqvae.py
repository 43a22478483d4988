"""Tests for nnunet_ext.methods.hcnet.vqvae: HCNet's TIC clustering (Xie et al., Sect. 2.1, Eq. 1)."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from nnunet_ext.methods.hcnet.vqvae import (
    PRESETS, TICVQVAE, VQVAEFit, VQVAEPreset, assign_clusters, clustering_loss, codebook_term, commitment_term,
    early_enhancement, fit_vqvae, kmeans_clusters, mean_curves, nearest_code, normalize_tics, reconstruction_term,
    renumber_by_early_enhancement, resolve_preset, restart_dead_codes, warmup_autoencoder)

# Three kinetic families (T = 5 phases): slow persistent, plateau, fast wash-out (early enhancement 0.2 < 0.7 < 1.0).
FAMILIES = np.array([[0.0, 0.2, 0.4, 0.6, 0.8], [0.0, 0.7, 0.75, 0.75, 0.75], [0.0, 1.0, 0.8, 0.65, 0.5]])
# Measured on this phantom (data/fit seeds 0..9, TINY preset): VQ-VAE ARI 0.84-0.99 (seed 0: 0.946), k-means
# 0.996-1.0. The floors leave a margin of about 0.1 (VQ-VAE) and 0.05 (k-means) below the worst seed.
VQ_ARI_FLOOR = 0.75
KMEANS_ARI_FLOOR = 0.95
TINY = VQVAEPreset(hidden=(32, 32), latent_dim=4, epochs=30, lr=5e-3, lr_halving_epochs=10, batch_size=128,
                   max_training_points=None, warmup_epochs=5)


def phantom(seed: int = 0, per_family: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Case-normalised curves of the three families, amplitude x U(0.8, 1.2), noise sd 5 % of the peak scale."""
    rng = np.random.default_rng(seed)
    family = np.repeat(np.arange(3), per_family)
    amplitude = rng.uniform(0.8, 1.2, size=(family.size, 1))
    signal = 100.0 + 400.0 * amplitude * FAMILIES[family] + rng.normal(0.0, 20.0, size=(family.size, 5))
    return normalize_tics(signal), family


@pytest.fixture(scope="module")
def phantom_fit():
    points, family = phantom()
    return points, family, fit_vqvae(points, 3, TINY, seed=0)


# --- Sect. 2.1: min-max normalisation --------------------------------------------------------------------------------

def test_sect21_normalize_case_uses_one_min_max_per_array():
    tics = np.array([[0.0, 5.0, 10.0], [2.0, 4.0, 6.0]])
    out = normalize_tics(tics)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, tics / 10.0, rtol=1e-6)


def test_sect21_normalize_voxel_uses_one_min_max_per_row():
    tics = np.array([[0.0, 5.0, 10.0], [2.0, 4.0, 6.0], [3.0, 1.0, 2.0]])
    expected = np.array([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    np.testing.assert_allclose(normalize_tics(tics, mode="voxel"), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["case", "voxel"])
def test_sect21_normalize_constant_gives_zeros_without_warning(mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_tics(np.full((4, 6), 7.5), mode=mode)
        mixed = normalize_tics(np.array([[3.0, 3.0, 3.0], [1.0, 2.0, 3.0]]), mode=mode)
    assert out.shape == (4, 6) and not np.isnan(out).any() and np.all(out == 0.0)
    expected_first_row = [0.0, 0.0, 0.0] if mode == "voxel" else [1.0, 1.0, 1.0]
    np.testing.assert_allclose(mixed[0], expected_first_row)
    np.testing.assert_allclose(mixed[1], [0.0, 0.5, 1.0])


def test_sect21_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        normalize_tics(np.ones((2, 3)), mode="global")
    with pytest.raises(ValueError, match="2-D"):
        normalize_tics(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        normalize_tics(np.array([[0.0, np.nan]]))


def test_early_enhancement_is_s1_minus_s0():
    np.testing.assert_allclose(early_enhancement(FAMILIES), [0.2, 0.7, 1.0])
    with pytest.raises(ValueError):
        early_enhancement(np.ones((3, 1)))


# --- Sect. 2.1: k = argmin_j ||z_e - c_j||_2 -------------------------------------------------------------------------

@pytest.mark.parametrize("n, k, d, chunk", [(1, 1, 1, 1), (7, 3, 2, 1), (100, 10, 8, 64), (256, 16, 5, 128),
                                            (257, 16, 5, 128), (300, 40, 3, 100000)])
def test_sect21_nearest_code_matches_brute_force(n, k, d, chunk):
    generator = torch.Generator().manual_seed(n * 1000 + k)
    z_e = torch.randn((n, d), generator=generator)
    codebook = torch.randn((k, d), generator=generator)
    distances = ((z_e.double().numpy()[:, None, :] - codebook.double().numpy()[None, :, :]) ** 2).sum(axis=2)
    indices = nearest_code(z_e, codebook, chunk_size=chunk)
    assert indices.dtype == torch.long and indices.shape == (n,)
    np.testing.assert_array_equal(indices.numpy(), distances.argmin(axis=1))


def test_sect21_nearest_code_ties_go_to_lowest_index_and_empty_input_works():
    codebook = torch.tensor([[5.0, 5.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z_e = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(nearest_code(z_e, codebook, chunk_size=2).numpy(), [1, 1, 3])
    assert nearest_code(torch.zeros((0, 2)), codebook).shape == (0,)
    with pytest.raises(ValueError):
        nearest_code(torch.zeros((3, 2)), torch.zeros((4, 3)))


# --- Sect. 2.1: straight-through quantisation ------------------------------------------------------------------------

def test_sect21_straight_through_copies_gradient_to_z_e_and_not_to_codebook():
    model = TICVQVAE(5, 4, hidden=(8,), latent_dim=3)
    generator = torch.Generator().manual_seed(1)
    z_e = torch.randn((6, 3), generator=generator, requires_grad=True)
    upstream = torch.randn((6, 3), generator=generator)
    z_q_st, indices, z_q = model.quantize(z_e)
    torch.testing.assert_close(z_q_st, model.codebook.weight[indices])
    torch.testing.assert_close(z_q, model.codebook.weight[indices])
    (z_q_st * upstream).sum().backward()
    assert torch.equal(z_e.grad, upstream)
    assert model.codebook.weight.grad is None


def test_forward_returns_shapes_and_codebook_rows():
    model = TICVQVAE(5, 4, hidden=(8, 6), latent_dim=3)
    out = model(torch.rand((10, 5), generator=torch.Generator().manual_seed(2)))
    assert out["reconstruction"].shape == (10, 5) and out["z_e"].shape == (10, 3)
    assert out["indices"].shape == (10,) and out["indices"].dtype == torch.long
    assert torch.equal(out["z_q"], model.codebook.weight[out["indices"]])


# --- Eq. 1 ------------------------------------------------------------------------------------------------------------

def _eq1_leaves(seed: int = 3, n: int = 6, t: int = 5, d: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
            for shape in ((n, t), (n, t), (n, d), (n, d))]


@pytest.mark.parametrize("literal", [False, True])
def test_eq1_values_and_gradients_match_numpy(literal):
    tic, reconstruction, z_e, z_q = _eq1_leaves()
    beta, n = 0.25, tic.shape[0]
    total, terms = clustering_loss(tic, reconstruction, z_e, z_q, beta=beta, literal=literal)
    t, r, e, q = (x.detach().numpy() for x in (tic, reconstruction, z_e, z_q))
    # Independent NumPy Eq. 1: per-sample squared L2 norms, averaged over the batch.
    rec = ((t - r) ** 2).sum(axis=1).mean()
    vq = ((e - q) ** 2).sum(axis=1).mean()
    expected = rec + beta * vq if literal else rec + vq + beta * vq
    assert total.item() == pytest.approx(expected, rel=1e-12)
    assert terms["reconstruction"] == pytest.approx(rec, rel=1e-12)
    assert terms["codebook"] == pytest.approx(vq, rel=1e-12)
    assert terms["commitment"] == (0.0 if literal else pytest.approx(vq, rel=1e-12))
    total.backward()
    # d/dc_k: weight 1 on ||sg[z_e] - c_k||^2 (standard) or beta (printed Eq. 1); d/dz_e: beta commitment or none.
    code_weight = beta if literal else 1.0
    np.testing.assert_allclose(z_q.grad.numpy(), code_weight * 2.0 * (q - e) / n, rtol=1e-12)
    if literal:
        assert z_e.grad is None
    else:
        np.testing.assert_allclose(z_e.grad.numpy(), beta * 2.0 * (e - q) / n, rtol=1e-12)
    np.testing.assert_allclose(reconstruction.grad.numpy(), 2.0 * (r - t) / n, rtol=1e-12)


def _grads(module: torch.nn.Module) -> list:
    return [p.grad for p in module.parameters()]


def test_eq1_codebook_term_moves_only_codes_and_commitment_only_encoder():
    model = TICVQVAE(5, 4, hidden=(8,), latent_dim=3)
    x = torch.rand((12, 5), generator=torch.Generator().manual_seed(4))
    out = model(x)
    codebook_term(out["z_e"], out["z_q"]).backward()
    assert all(g is None for g in _grads(model.encoder) + _grads(model.decoder))
    assert model.codebook.weight.grad is not None and model.codebook.weight.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    out = model(x)
    commitment_term(out["z_e"], out["z_q"]).backward()
    assert model.codebook.weight.grad is None
    assert all(g is None for g in _grads(model.decoder))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.encoder))


# --- Renumbering and cluster means ------------------------------------------------------------------------------------

def test_renumbering_orders_used_codes_by_early_enhancement_then_unused():
    # Raw code 0: S1-S0 = 0.5, code 2: 0.1, code 3: 0.3, code 1: unused, code 4: unused.
    points = np.array([[0.0, 0.5, 0.4], [0.0, 0.1, 0.2], [0.2, 0.5, 0.5], [0.0, 0.1, 0.1]])
    raw = np.array([0, 2, 3, 2])
    order = renumber_by_early_enhancement(points, raw, 5)
    np.testing.assert_array_equal(order, [3, 4, 1, 2, 5])
    with pytest.raises(ValueError):
        renumber_by_early_enhancement(points, np.array([0, 1, 2, 5]), 5)


def test_mean_curves_uses_zeros_for_empty_clusters():
    points = np.array([[0.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    means = mean_curves(points, np.array([1, 1, 3]), 4)
    np.testing.assert_allclose(means, [[0.0, 2.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert not np.isnan(means).any()
    with pytest.raises(ValueError):
        mean_curves(points, np.array([0, 1, 2]), 4)


# --- Sect. 2.1 on a phantom: VQ-VAE clusters recover the kinetic families ---------------------------------------------

def test_sect21_phantom_vqvae_and_kmeans_recover_families(phantom_fit):
    points, family, fit = phantom_fit
    vq_ids = assign_clusters(fit, points)
    km_ids = kmeans_clusters(points, 3, seed=0)
    assert adjusted_rand_score(family, vq_ids) >= VQ_ARI_FLOOR
    assert adjusted_rand_score(family, km_ids) >= KMEANS_ARI_FLOOR
    for ids in (vq_ids, km_ids):
        assert set(np.unique(ids)) <= {1, 2, 3}
        # Renumbering: the slow persistent family (weakest early enhancement) is id 1, the wash-out family id 3.
        assert np.bincount(ids[family == 0]).argmax() == 1
        assert np.bincount(ids[family == 2]).argmax() == 3
        curves = mean_curves(points, ids, 3)
        assert np.all(np.diff(early_enhancement(curves)) > 0)


def test_fit_result_and_history(phantom_fit):
    points, _, fit = phantom_fit
    assert isinstance(fit, VQVAEFit) and not fit.model.training
    assert all(p.device.type == "cpu" for p in fit.model.parameters())
    assert [h["epoch"] for h in fit.history] == list(range(1, TINY.epochs + 1))
    lrs = [h["lr"] for h in fit.history]
    assert lrs[0] == pytest.approx(5e-3) and lrs[10] == pytest.approx(2.5e-3) and lrs[20] == pytest.approx(1.25e-3)
    assert fit.history[-1]["reconstruction"] < fit.history[0]["reconstruction"]
    assert sorted(fit.order.tolist()) == [1, 2, 3]
    np.testing.assert_array_equal(assign_clusters(fit.model, points[:50], fit.order), assign_clusters(fit, points[:50]))
    with pytest.raises(ValueError):
        assign_clusters(fit.model, points[:5])


# --- Dead-code restarts -----------------------------------------------------------------------------------------------

def test_restart_moves_far_away_code_onto_the_data_and_resets_adam_rows():
    model = TICVQVAE(5, 3, hidden=(8,), latent_dim=2)
    x = torch.rand((200, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        z_e = model.encode(x)
        model.codebook.weight.copy_(torch.stack([z_e[0], z_e[1], torch.full((2,), 1e3)]))
    counts = torch.bincount(nearest_code(z_e, model.codebook.weight), minlength=3)
    assert counts[2] == 0 and counts.sum() == 200  # the far-away code is dead
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x)["z_q"].sum().backward()
    optimizer.step()
    state = optimizer.state[model.codebook.weight]
    # The dead row got no gradient; fill the moments so that the reset is visible.
    state["exp_avg"].fill_(1.0)
    state["exp_avg_sq"].fill_(1.0)
    live_before = model.codebook.weight[:2].detach().clone()
    restarted = restart_dead_codes(model, counts, x, np.random.default_rng(0), torch.Generator().manual_seed(0),
                                   optimizer)
    assert restarted == 1
    assert torch.equal(model.codebook.weight[:2].detach(), live_before)
    gap = torch.cdist(model.codebook.weight[2:].detach(), z_e).min()
    assert gap < 1e-2 * z_e.pow(2).mean().sqrt()
    assert (nearest_code(z_e, model.codebook.weight) == 2).any()
    assert torch.all(state["exp_avg"][2] == 0) and torch.all(state["exp_avg_sq"][2] == 0)
    assert torch.all(state["exp_avg"][:2] == 1) and torch.all(state["exp_avg_sq"][:2] == 1)


def test_warmup_trains_the_plain_autoencoder_and_leaves_the_codebook():
    # Module docstring item 5a (not in the paper): min ||TIC - D(E(TIC))||^2 before quantisation.
    points, _ = phantom(seed=2, per_family=100)
    x = torch.from_numpy(points)
    model = TICVQVAE(5, 3, hidden=(16,), latent_dim=2)
    codebook = model.codebook.weight.detach().clone()

    def plain_loss() -> float:
        with torch.no_grad():
            return reconstruction_term(x, model.decode(model.encode(x))).item()

    before = plain_loss()
    warmup_autoencoder(model, x, epochs=5, lr=5e-3, batch_size=32, generator=torch.Generator().manual_seed(0))
    assert plain_loss() < 0.5 * before
    assert torch.equal(model.codebook.weight.detach(), codebook)


def test_fit_restarts_dead_codes_when_k_exceeds_the_structure():
    # Two distinct curves (100 exact copies each) and K = 5: k-means can only place 2 distinct codes.
    points = np.repeat(FAMILIES[[0, 2]], 100, axis=0).astype(np.float32)
    preset = VQVAEPreset(hidden=(8,), latent_dim=2, epochs=4, lr=5e-3, lr_halving_epochs=2, batch_size=64,
                         max_training_points=None, warmup_epochs=1)
    fit = fit_vqvae(points, 5, preset, seed=0)
    assert fit.restarts > 0
    assert fit.restarts == sum(h["restarted"] for h in fit.history)
    for record in fit.history[:-1]:
        assert record["used_codes"] + record["restarted"] == 5  # every code was used or restarted
    assert fit.history[-1]["restarted"] == 0
    ids = assign_clusters(fit, points)
    used = np.unique(ids)
    # Used codes take the lowest ids, ordered by early enhancement: the slow curve gets id 1.
    np.testing.assert_array_equal(used, np.arange(1, used.size + 1))
    assert np.all(ids[:100] == 1)


# --- Determinism and presets ------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_fit_and_leaves_global_rng_alone():
    points, _ = phantom(seed=1, per_family=150)
    preset = VQVAEPreset(hidden=(8, 8), latent_dim=2, epochs=3, lr=5e-3, lr_halving_epochs=1, batch_size=64,
                         max_training_points=300, warmup_epochs=1)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    first = fit_vqvae(points, 4, preset, seed=7)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    second = fit_vqvae(points, 4, preset, seed=7)
    np.testing.assert_array_equal(assign_clusters(first, points), assign_clusters(second, points))
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    assert first.history == second.history


def test_presets_follow_the_paper_schedule():
    paper = resolve_preset("paper")
    assert (paper.epochs, paper.lr, paper.lr_halving_epochs) == (300, 5e-3, 50)
    assert paper is PRESETS["paper"] and resolve_preset(TINY) is TINY
    with pytest.raises(ValueError):
        resolve_preset("huge")
    with pytest.raises(ValueError):
        fit_vqvae(np.zeros((2, 5), dtype=np.float32), 3, TINY)
