"""Tests for nnunet_ext.methods.dkm.diffusion: the DKM schedule and DDPM formulas (Eq. 1-4, Eq. 6), checked against MONAI."""
import pytest
import torch

from nnunet_ext.methods.dkm.diffusion import LinearDiffusionSchedule, fixed_noise_like

torch.set_num_threads(1)

monai_schedulers = pytest.importorskip("monai.networks.schedulers")


def monai_scheduler() -> "monai_schedulers.DDPMScheduler":
    # MONAI's "linear_beta" is torch.linspace(beta_start, beta_end, T) with 0-based timesteps, as ours.
    return monai_schedulers.DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4,
                                          beta_end=1e-2, clip_sample=False)


@pytest.fixture
def schedule() -> LinearDiffusionSchedule:
    return LinearDiffusionSchedule()


def images(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_schedule_matches_monai_linear_beta(schedule):
    reference = monai_scheduler()
    assert schedule.betas.shape == (1000,)
    assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(1e-2)
    torch.testing.assert_close(schedule.betas, reference.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(schedule.alphas, 1.0 - reference.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(schedule.alpha_bars, reference.alphas_cumprod, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(3, 1, 6, 7), (3, 2, 4, 5, 6)])
def test_q_sample_matches_monai_add_noise(schedule, shape):
    x0, noise = images(shape, seed=1)
    t = torch.tensor([0, 417, 999])
    expected = monai_scheduler().add_noise(original_samples=x0, noise=noise, timesteps=t)
    torch.testing.assert_close(schedule.q_sample(x0, t, noise), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_eq2_4_forward_noising_statistics(schedule, t):
    """Eq. 2/4: x_t | x_0 ~ N(sqrt(abar_t) x_0, (1 - abar_t) I), checked over many noise draws."""
    draws = 20000
    x0 = torch.linspace(-2.0, 2.0, 12).reshape(1, 1, 3, 4)
    noise = torch.randn((draws, 1, 3, 4), generator=torch.Generator().manual_seed(t))
    x_t = schedule.q_sample(x0.expand(draws, -1, -1, -1), torch.full((draws,), t), noise)
    abar = schedule.alpha_bars[t].item()
    # 5-sigma bounds of the sample mean and sample variance.
    mean_tolerance = 5 * ((1 - abar) / draws) ** 0.5
    variance_tolerance = 5 * (1 - abar) * (2 / draws) ** 0.5
    assert torch.allclose(x_t.mean(0, keepdim=True), abar ** 0.5 * x0, atol=mean_tolerance)
    assert torch.allclose(x_t.var(0), torch.full_like(x0[0], 1 - abar), atol=variance_tolerance)


@pytest.mark.parametrize("t", [0, 10, 500, 999])
def test_eq6_target_predict_start_returns_post(schedule, t):
    """With the exact Eq. 6 target eps_k, the x_0-prediction from the noisy PRE image is the POST image."""
    pre, post = images((2, 1, 5, 6, 7), seed=2)
    timesteps = torch.full((2,), t)
    x_t = schedule.q_sample(pre, timesteps, torch.randn_like(pre))
    eps_k = schedule.kinetic_noise_target(x_t, post, timesteps)
    torch.testing.assert_close(schedule.predict_start(x_t, eps_k, timesteps), post, rtol=1e-4, atol=1e-4)


# MONAI's last step (t = 0) weights x_0 by beta_0 / (1 - abar_0) in float32, where 1 - float32(0.9999) is 1.00017e-4:
# the weight is 0.99983 instead of 1. Ours derives both from abar and is exact, so compare with this tolerance.
MONAI_FINAL_STEP_RTOL = 3e-4


def monai_kinetic_noise(scheduler, x_t, post, t: int):
    """Eq. 6 target transcribed with MONAI's own abar_t (its float32 cumprod differs from ours by ~1 ulp, which the
    factor 1 / sqrt(1 - abar_0) = 100 would amplify beyond the tolerance at t = 0)."""
    abar = scheduler.alphas_cumprod[t]
    return (x_t - abar.sqrt() * post) / (1 - abar).sqrt()


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_eq6_monai_step_predicts_post(schedule, t):
    """MONAI's DDPMScheduler.step, given the exact Eq. 6 noise of a noisy PRE image, predicts x_0 = x_post."""
    scheduler = monai_scheduler()
    pre, post = images((1, 1, 6, 6), seed=3)
    x_t = schedule.q_sample(pre, torch.tensor([t]), torch.randn_like(pre))
    _, monai_start = scheduler.step(model_output=monai_kinetic_noise(scheduler, x_t, post, t), timestep=t,
                                    sample=x_t)
    torch.testing.assert_close(monai_start, post, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_ddpm_step_matches_monai_step(schedule, t):
    """Eq. 3 with fixed variance beta_tilde: same x_0-prediction and, for the same seed, the same x_{t-1}."""
    x_t, eps = images((2, 1, 5, 6), seed=4)
    monai_prev, monai_start = monai_scheduler().step(model_output=eps, timestep=t, sample=x_t,
                                                     generator=torch.Generator().manual_seed(7))
    ours_prev, ours_start = schedule.ddpm_step(eps, x_t, torch.tensor([t, t]),
                                               generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours_start, monai_start, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_prev, monai_prev, rtol=MONAI_FINAL_STEP_RTOL, atol=1e-4)


@pytest.mark.parametrize("t, t_prev", [(10, 9), (500, 300), (999, 0), (40, -1)])
def test_posterior_preserves_forward_marginal(schedule, t, t_prev):
    """q(x_s | x_t, x_0) composed with q(x_t | x_0) gives q(x_s | x_0), also for strided steps (s < t - 1)."""
    x0 = torch.ones(1, 1, 2, 2)
    abar_s = 1.0 if t_prev < 0 else schedule.alpha_bars[t_prev].item()
    # x0 coefficient of the mean: set eps = 0.
    mean_signal, variance = schedule.posterior_mean_variance(x0, schedule.q_sample(x0, t, torch.zeros_like(x0)),
                                                             t, t_prev)
    assert torch.allclose(mean_signal, torch.full_like(x0, abar_s ** 0.5), atol=1e-5)
    # eps coefficient of the mean: set x0 = 0, eps = 1; its square plus the posterior variance is 1 - abar_s.
    zeros = torch.zeros_like(x0)
    mean_noise, _ = schedule.posterior_mean_variance(zeros, schedule.q_sample(zeros, t, x0), t, t_prev)
    assert torch.allclose(mean_noise ** 2 + variance, torch.full_like(x0, 1 - abar_s), atol=1e-5)


def test_default_t_prev_is_one_step(schedule):
    x_start, x_t = images((2, 1, 3, 3), seed=4)
    t = torch.tensor([5, 800])
    for a, b in zip(schedule.posterior_mean_variance(x_start, x_t, t),
                    schedule.posterior_mean_variance(x_start, x_t, t, t - 1)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("num_steps", [None, 7])
def test_oracle_reverse_chain_ends_at_post(schedule, num_steps):
    """A full (or strided) reverse chain from x_t*(pre), driven by the exact Eq. 6 noise, ends at x_post."""
    pre, post = images((2, 1, 4, 5, 6), seed=5)

    def oracle(x_t, t):
        return schedule.kinetic_noise_target(x_t, post, t)

    result = schedule.synthesize_post_chain(oracle, pre, start_timestep=200, num_steps=num_steps)
    torch.testing.assert_close(result, post, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(schedule.synthesize_post(oracle, pre), post, rtol=1e-4, atol=1e-4)


def test_oracle_reverse_chain_ends_at_post_with_monai():
    scheduler = monai_scheduler()
    reference = LinearDiffusionSchedule()
    pre, post = images((1, 1, 5, 5), seed=6)
    generator = torch.Generator().manual_seed(0)
    sample = reference.q_sample(pre, torch.tensor([150]), torch.randn_like(pre))
    for t in range(150, -1, -1):
        sample, _ = scheduler.step(model_output=monai_kinetic_noise(scheduler, sample, post, t), timestep=t,
                                   sample=sample, generator=generator)
    torch.testing.assert_close(sample, post, rtol=MONAI_FINAL_STEP_RTOL, atol=1e-4)


def test_synthesize_post_is_deterministic_for_a_seed(schedule):
    pre, _ = images((1, 1, 4, 4, 4), seed=8)

    def model(x_t, t):
        return 0.3 * x_t + 1e-3 * t.reshape(-1, 1, 1, 1, 1)

    first = schedule.synthesize_post(model, pre, generator=torch.Generator().manual_seed(11))
    second = schedule.synthesize_post(model, pre, generator=torch.Generator().manual_seed(11))
    other = schedule.synthesize_post(model, pre, generator=torch.Generator().manual_seed(12))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(schedule.synthesize_post(model, pre), schedule.synthesize_post(model, pre))
    chain_a = schedule.synthesize_post_chain(model, pre, start_timestep=20, seed=3)
    chain_b = schedule.synthesize_post_chain(model, pre, start_timestep=20, seed=3)
    assert torch.equal(chain_a, chain_b)


def test_fixed_noise_like_is_deterministic_and_shared_over_batch():
    x = torch.zeros(3, 1, 4, 5, 6, dtype=torch.float64)
    noise = fixed_noise_like(x, seed=0)
    assert noise.shape == x.shape and noise.dtype == x.dtype
    assert torch.equal(noise, fixed_noise_like(x, seed=0))
    assert torch.equal(noise[0], noise[2])
    assert torch.equal(noise[:1], fixed_noise_like(x[:1], seed=0))
    assert not torch.equal(noise, fixed_noise_like(x, seed=1))
    independent = fixed_noise_like(x, seed=0, shared_over_batch=False)
    assert not torch.equal(independent[0], independent[1])


def test_invalid_timesteps_are_rejected(schedule):
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="timesteps"):
        schedule.q_sample(x, torch.tensor([0, 1000]), x)
    with pytest.raises(ValueError, match="one timestep per batch item"):
        schedule.q_sample(x, torch.tensor([0, 1, 2]), x)


@pytest.mark.parametrize("t", [0, 50, 300, 999])
def test_min_snr_weight_turns_eq6_loss_into_capped_post_prediction_error(t):
    """Weighted Eq. 6 eps-error == min(SNR_t, gamma) * squared error of the implied x_k estimate (analytic)."""
    schedule = LinearDiffusionSchedule()
    gen = torch.Generator().manual_seed(t)
    pre, post, noise, eps_hat = (torch.randn(2, 1, 4, 5, 6, generator=gen) for _ in range(4))
    x_t = schedule.q_sample(pre, t, noise)
    eps_k = schedule.kinetic_noise_target(x_t, post, t)
    weighted = schedule.min_snr_weight(t, x_t, gamma=5.0) * (eps_hat - eps_k) ** 2
    snr = schedule.snr(t, x_t)
    post_hat = schedule.predict_start(x_t, eps_hat, t)
    expected = torch.clamp(snr, max=5.0) * (post_hat - post) ** 2
    torch.testing.assert_close(weighted, expected, rtol=1e-3, atol=1e-4)
