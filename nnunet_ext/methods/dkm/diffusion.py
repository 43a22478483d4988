"""DDPM math for the diffusion module (DM) of DKM (Lv et al., MICCAI 2023, Sect. 2.1 and 2.3).

Notation follows the paper (Eq. 1-4) and Ho et al. (2020): ``beta_t`` is the variance schedule, ``alpha_t = 1 - beta_t``
and ``abar_t = prod_{s<=t} alpha_s``. The DKM schedule is linear from 1e-4 to 1e-2 with T = 1000 (paper Sect. 3).

Timestep convention: ``t`` is a 0-based index into the schedule (``t = 0`` is the paper's ``t = 1``), the same
convention as MONAI's ``DDPMScheduler`` and as the timestep fed to the noise predictor. ``abar_{-1} := 1`` (no noise).

Our reading of Eq. 4 and Eq. 6 (the paper gives no more detail): the DM input is the noisy PRE-contrast image

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,                          (Eq. 4, x_0 = pre-contrast)

and eps_theta(x_t, t) is trained (Eq. 6) to predict the "kinetic noise" that relates x_t to the POST-contrast image
x_k as if x_t had been drawn from q(x_t | x_k):

    eps_k = (x_t - sqrt(abar_t) x_k) / sqrt(1 - abar_t)  =  eps + sqrt(abar_t / (1 - abar_t)) (x_0 - x_k),

so that the DDPM reverse process started at x_t(pre) lands on x_k ("transform the noisy sample x_t to the
post-contrast data x_k", Sect. 2.1). Note the second term: for small t the target is dominated by the
(pre - post) difference amplified by sqrt(abar_t / (1 - abar_t)) (about 100 at t = 0), so the loss scale varies
strongly with t; a trainer may want to restrict or weight the sampled timesteps.

The module is torch-only (imported lazily by callers); the schedule is an ``nn.Module`` with non-persistent CPU
buffers, and every method also moves the (tiny) schedule tables to the device of its input, so it works on CPU and
CUDA with or without ``.to(device)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fixed_noise_like(x: torch.Tensor, seed: int, shared_over_batch: bool = True) -> torch.Tensor:
    """Deterministic standard-normal noise with the shape, dtype and device of ``x``.

    Used for DM feature extraction so that the same image always gives the same kinetic code. The noise is drawn
    on the CPU from ``torch.Generator().manual_seed(seed)`` (identical on every device) and then moved.

    Args:
        x: reference tensor (B, C, *spatial).
        seed: generator seed.
        shared_over_batch: if True (default) every batch item gets the same noise field, so the features of an image
            do not depend on its position in the batch; otherwise one (B, C, *spatial) draw.

    Returns:
        Noise tensor shaped like ``x``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    shape = tuple(x.shape[1:]) if shared_over_batch else tuple(x.shape)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if shared_over_batch:
        noise = noise.unsqueeze(0).expand(x.shape[0], *shape)
    return noise.to(device=x.device, dtype=x.dtype).contiguous()


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard-normal noise like ``x``; drawn on the generator's device (typically CPU), then moved to ``x``."""
    if generator is None:
        return torch.randn_like(x)
    noise = torch.randn(tuple(x.shape), generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


class LinearDiffusionSchedule(nn.Module):
    """Linear DDPM variance schedule and the forward/reverse process formulas used by DKM.

    Args:
        num_timesteps: T (paper: 1000).
        beta_start: beta of the first step (paper: 1e-4).
        beta_end: beta of the last step (paper: 1e-2).

    Attributes:
        betas: (T,) ``torch.linspace(beta_start, beta_end, T)`` (the DDPM / MONAI ``linear_beta`` convention).
        alphas: (T,) ``1 - betas``.
        alpha_bars: (T,) cumulative product of ``alphas`` (computed in float64, stored as float32).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 1e-2) -> None:
        super().__init__()
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.num_timesteps = int(num_timesteps)
        betas = torch.linspace(beta_start, beta_end, self.num_timesteps, dtype=torch.float64)
        alphas = 1.0 - betas
        # Non-persistent: the schedule is fully defined by the constructor and must not clutter checkpoints.
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas", alphas.float(), persistent=False)
        self.register_buffer("alpha_bars", torch.cumprod(alphas, dim=0).float(), persistent=False)

    def extra_repr(self) -> str:
        return (f"num_timesteps={self.num_timesteps}, beta_start={self.betas[0].item():.3g}, "
                f"beta_end={self.betas[-1].item():.3g}")

    # ------------------------------------------------------------------ helpers
    def _timesteps(self, t: torch.Tensor | int, x: torch.Tensor, allow_clean: bool = False) -> torch.Tensor:
        """``t`` as a LongTensor (B,) on ``x``'s device; an int is broadcast over the batch.

        ``allow_clean`` admits ``-1`` (the clean end of the chain), valid only as a ``t_prev``.
        """
        if isinstance(t, int):
            t = torch.full((x.shape[0],), t, dtype=torch.long)
        t = torch.as_tensor(t).to(device=x.device, dtype=torch.long).reshape(-1)
        if t.numel() == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        if t.numel() != x.shape[0]:
            raise ValueError(f"need one timestep per batch item: t has {t.numel()}, x has batch {x.shape[0]}")
        lowest = -1 if allow_clean else 0
        if bool((t < lowest).any()) or bool((t >= self.num_timesteps).any()):
            raise ValueError(f"timesteps must be in [{lowest}, {self.num_timesteps - 1}], got {t.tolist()}")
        return t

    def _abar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """abar_t gathered per batch item and shaped (B, 1, ..., 1) to broadcast over channels and 2D/3D space.

        ``t = -1`` gives abar = 1 (the clean end of the chain).
        """
        padded = torch.cat([torch.ones(1, dtype=self.alpha_bars.dtype, device=self.alpha_bars.device),
                            self.alpha_bars])
        values = padded.to(x.device)[t + 1].to(x.dtype)
        return values.reshape(-1, *([1] * (x.ndim - 1)))

    def snr(self, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t), shaped (B, 1, ..., 1) like :meth:`_abar`."""
        abar = self._abar(self._timesteps(t, x), x)
        return abar / (1.0 - abar)

    def min_snr_weight(self, t: torch.Tensor | int, x: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
        """Min-SNR-gamma loss weight min(SNR_t, gamma) / SNR_t (Hang et al., ICCV 2023) for the eps loss of Eq. 6.

        With DKM's target eps_k = eps + sqrt(SNR_t) (x_0 - x_k) the plain eps-MSE grows like SNR_t at small t
        (about 1e4 at t = 0 for this schedule) and drowns every other timestep. Weighted, the per-timestep loss is
        ``min(SNR_t, gamma) * ||x_k_hat - x_k||^2``: an x_k-prediction error capped at gamma for small t and the
        plain eps loss where SNR_t < gamma. The minimiser (eps_theta = E[eps_k | x_t]) is unchanged.
        """
        snr = self.snr(t, x)
        return torch.clamp(snr, max=gamma) / snr

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising, Eq. 2/4: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.

        Args:
            x0: clean image (B, C, *spatial); in DKM the pre-contrast image.
            t: LongTensor (B,) of 0-based timesteps (or an int for the whole batch).
            noise: eps ~ N(0, I), shaped like ``x0``.
        """
        t = self._timesteps(t, x0)
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def kinetic_noise_target(self, x_t: torch.Tensor, x_post: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Eq. 6 regression target (our reading): ``eps_k = (x_t - sqrt(abar_t) x_post) / sqrt(1 - abar_t)``.

        ``x_t`` is the noisy pre-contrast image (Eq. 4). With this target, ``predict_start(x_t, eps_k, t)`` returns
        ``x_post`` exactly and the DDPM reverse chain driven by it ends at ``x_post``.
        """
        t = self._timesteps(t, x_t)
        abar = self._abar(t, x_t)
        return (x_t - abar.sqrt() * x_post) / (1.0 - abar).sqrt()

    # ------------------------------------------------------------------ reverse process
    def predict_start(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x_0-prediction from a noise estimate (Ho et al. Eq. 15): ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        t = self._timesteps(t, x_t)
        abar = self._abar(t, x_t)
        return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                                t_prev: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_s | x_t, x_0) for s = ``t_prev`` < t (Ho et al. Eq. 6/7).

        With ``t_prev = t - 1`` (default) this is the DDPM posterior
        ``mu = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t`` and
        ``beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t``. For a strided chain (s < t - 1) the one-step
        quantities are replaced by the composite ones ``alpha_{t|s} = abar_t / abar_s`` and
        ``beta_{t|s} = 1 - alpha_{t|s}`` (the respaced chain of Nichol & Dhariwal 2021). ``t_prev = -1`` means the clean end (abar = 1, variance 0).

        Returns:
            (mean shaped like ``x_t``, variance shaped (B, 1, ..., 1)).
        """
        t = self._timesteps(t, x_t)
        t_prev = t - 1 if t_prev is None else self._timesteps(t_prev, x_t, allow_clean=True)
        if bool((t_prev >= t).any()):
            raise ValueError("t_prev must be smaller than t")
        abar_t = self._abar(t, x_t)
        abar_s = self._abar(t_prev, x_t)
        alpha_ts = abar_t / abar_s
        beta_ts = 1.0 - alpha_ts
        mean = (abar_s.sqrt() * beta_ts / (1.0 - abar_t)) * x_start \
            + (alpha_ts.sqrt() * (1.0 - abar_s) / (1.0 - abar_t)) * x_t
        variance = (1.0 - abar_s) / (1.0 - abar_t) * beta_ts
        return mean, variance

    def ddpm_step(self, model_eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                  generator: torch.Generator | None = None, t_prev: torch.Tensor | int | None = None,
                  clip: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step x_t -> x_{t_prev} of Eq. 3 with the fixed variance beta_tilde ("fixed_small").

        Args:
            model_eps: the noise predicted by eps_theta(x_t, t), shaped like ``x_t``.
            x_t: current sample.
            t: current 0-based timestep(s).
            generator: optional generator for the added noise (drawn on its device, then moved to ``x_t``'s).
            t_prev: target timestep (default ``t - 1``; ``-1`` returns the posterior mean at the clean end).
            clip: optional (min, max) clamp of the x_0-prediction (MONAI/diffusers ``clip_sample``); off by default
                because DKM images are z-scored, not scaled to [-1, 1].

        Returns:
            (x_{t_prev}, predicted x_0). No noise is added where ``t_prev == -1``.
        """
        t = self._timesteps(t, x_t)
        t_prev = t - 1 if t_prev is None else self._timesteps(t_prev, x_t, allow_clean=True)
        x_start = self.predict_start(x_t, model_eps, t)
        if clip is not None:
            x_start = x_start.clamp(clip[0], clip[1])
        mean, variance = self.posterior_mean_variance(x_start, x_t, t, t_prev)
        if not bool((t_prev >= 0).any()):  # clean end for every item: the posterior mean, no noise drawn
            return mean, x_start
        not_last = (t_prev >= 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        noise = _randn_like(x_t, generator)
        # The clamp mirrors MONAI/diffusers' "fixed_small" guard; beta_tilde is > 0 for every t_prev >= 0 anyway.
        return mean + not_last * variance.clamp_min(1e-20).sqrt() * noise, x_start

    # ------------------------------------------------------------------ pre -> post synthesis
    @torch.no_grad()
    def synthesize_post(self, eps_model: EpsModel, pre: torch.Tensor, timesteps: Sequence[int] = (50, 100, 200),
                        generator: torch.Generator | None = None, seed: int = 0) -> torch.Tensor:
        """Post-contrast estimate from a pre-contrast image: mean of one-step x_0-predictions.

        For each t in ``timesteps``: ``x_t = q_sample(pre, t, eps)`` (Eq. 4) and
        ``x_k_hat(t) = predict_start(x_t, eps_theta(x_t, t), t)``; the result is the mean over t.

        Why one step and not the reverse chain: eps_theta is trained (Eq. 6) only on noisy PRE-contrast inputs
        x_t(pre). A multi-step DDPM chain (:meth:`synthesize_post_chain`) feeds it intermediates x_{t-1}, x_{t-2}, ...
        that are noisy POST-like images, a distribution it never saw in training, so its predictions there are not
        well founded. The one-step x_0-prediction from x_t(pre) is exactly the quantity Eq. 6 trains (with the
        exact target it returns x_k), so it is the well-founded estimate; averaging over a few t and noise draws
        reduces its variance.

        Args:
            eps_model: callable ``eps_model(x_t, t)`` (e.g. :class:`nnunet_ext.methods.dkm.network.DiffusionUNet` in eval
                mode).
            pre: pre-contrast image (B, 1, *spatial).
            timesteps: 0-based timesteps to average over.
            generator: noise generator (CPU recommended for device-independent results); if None, a CPU generator
                seeded with ``seed`` is created, so the default call is deterministic.
            seed: seed used when ``generator`` is None.
        """
        if len(timesteps) == 0:
            raise ValueError("synthesize_post needs at least one timestep")
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        estimate = torch.zeros_like(pre)
        for step in timesteps:
            t = self._timesteps(int(step), pre)
            x_t = self.q_sample(pre, t, _randn_like(pre, generator))
            estimate += self.predict_start(x_t, eps_model(x_t, t), t)
        return estimate / len(timesteps)

    @torch.no_grad()
    def synthesize_post_chain(self, eps_model: EpsModel, pre: torch.Tensor, start_timestep: int = 200,
                              num_steps: int | None = None, generator: torch.Generator | None = None, seed: int = 0,
                              clip: tuple[float, float] | None = None) -> torch.Tensor:
        """Literal reading of Sect. 2.1: run the DDPM reverse chain from x_{t*}(pre) down to the clean end.

        ``x_{t*} = q_sample(pre, t*, eps)``; then Eq. 3 steps (fixed variance) through ``num_steps`` timesteps evenly
        spaced from t* to 0 (all t*+1 steps if None), the last step returning the posterior mean at abar = 1, i.e. the
        x_0-prediction. See :meth:`synthesize_post` for why this is less well founded than the one-step estimate.

        Args:
            eps_model: callable ``eps_model(x_t, t)``.
            pre: pre-contrast image (B, 1, *spatial).
            start_timestep: t*, 0-based.
            num_steps: number of model evaluations (strided chain), or None for the full chain.
            generator: noise generator; if None a CPU generator seeded with ``seed``.
            seed: seed used when ``generator`` is None.
            clip: optional clamp of each x_0-prediction (see :meth:`ddpm_step`).
        """
        if not 0 <= start_timestep < self.num_timesteps:
            raise ValueError(f"start_timestep must be in [0, {self.num_timesteps - 1}], got {start_timestep}")
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        if num_steps is None:
            num_steps = start_timestep + 1
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        steps = torch.linspace(start_timestep, 0, min(num_steps, start_timestep + 1), dtype=torch.float64)
        steps = torch.unique_consecutive(steps.round().long()).tolist()
        x = self.q_sample(pre, self._timesteps(int(steps[0]), pre), _randn_like(pre, generator))
        for index, step in enumerate(steps):
            t = self._timesteps(int(step), pre)
            t_prev = self._timesteps(int(steps[index + 1]) if index + 1 < len(steps) else -1, pre, allow_clean=True)
            x, _ = self.ddpm_step(eps_model(x, t), x, t, generator=generator, t_prev=t_prev, clip=clip)
        return x
