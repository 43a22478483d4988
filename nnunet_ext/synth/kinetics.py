"""Contrast-agent pharmacokinetics for DCE-MRI phantoms (numpy/scipy only).

Model (facts from /work/shared/PHANTOMS.md, "Breast DCE-MRI"):

* **Population arterial input function** (Parker et al., MRM 56:993, 2006, eq. 1). Blood concentration in mM,
  ``t`` in minutes::

      C_b(t) = sum_{n=1,2} A_n / (sigma_n sqrt(2 pi)) exp(-(t - T_n)^2 / (2 sigma_n^2))
               + alpha exp(-beta t) / (1 + exp(-s (t - tau)))

  with A1 = 0.809, A2 = 0.330 mM min, T1 = 0.17046, T2 = 0.365 min, sigma1 = 0.0563, sigma2 = 0.132 min,
  alpha = 1.050 mM, beta = 0.1685 /min, s = 38.078 /min, tau = 0.483 min. ``t = 0`` is the origin of Parker's
  fit (the first-pass peak is at about 0.17 min, height about 6.1 mM). Plasma: ``C_p = C_b / (1 - Hct)``,
  Hct = 0.42 by default.
* **Extended Tofts model**::

      C_t(t) = v_p C_p(t) + K_trans * integral_0^t C_p(s) exp(-k_ep (t - s)) ds,   k_ep = K_trans / v_e

  ``K_trans`` and ``k_ep`` in /min, ``v_e`` and ``v_p`` are volume fractions. The convolution integral
  ``I(t; k_ep)`` is evaluated on a fine uniform grid (default step 0.1 s) *exactly* for the piecewise-linear
  interpolant of ``C_p``, once per evaluation time for a table of ``k_ep`` values (log-spaced, 1e-5..1e3 /min);
  per-voxel values are then linearly interpolated in ``log k_ep``, so millions of voxels cost one ``np.interp``
  per time point. The table is cached per (times, input function, step).
* **Spoiled gradient-echo signal**::

      S = M0 sin(a) (1 - E1) / (1 - cos(a) E1),   E1 = exp(-TR R1),   R1 = R10 + r1 C

  with relaxivity r1 = 4.5 /s/mM, TR = 5 ms and flip angle a = 12 degrees by default.
* **BI-RADS curve types**: initial relative enhancement (S_early - S_pre) / S_pre is slow (< 50 %), medium
  (50-100 %) or fast (> 100 %); the delayed change (S_late - S_early) / S_early is persistent (> +10 %),
  plateau (within +-10 %) or washout (< -10 %).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
from scipy.special import expit

# Parker et al. 2006 population AIF (blood concentration, mM; times in minutes).
PARKER_A = (0.809, 0.330)        # mM min
PARKER_T = (0.17046, 0.365)      # min
PARKER_SIGMA = (0.0563, 0.132)   # min
PARKER_ALPHA = 1.050             # mM
PARKER_BETA = 0.1685             # /min
PARKER_S = 38.078                # /min
PARKER_TAU = 0.483               # min
HEMATOCRIT = 0.42

RELAXIVITY_PER_S_PER_MM = 4.5    # r1 of a gadolinium agent
REPETITION_TIME_S = 0.005
FLIP_ANGLE_DEG = 12.0

CONVOLUTION_STEP_MIN = 1.0 / 600.0   # 0.1 s: resolves the ~3.4 s wide first-pass peak
K_EP_TABLE = np.geomspace(1e-5, 1e3, 577)  # /min; ~3 % ratio between neighbours

INITIAL_TYPES = ("slow", "medium", "fast")
DELAYED_TYPES = ("persistent", "plateau", "washout")


def parker_aif(t_min: np.ndarray | float) -> np.ndarray:
    """Parker population AIF: whole-blood concentration C_b(t) in mM (Parker et al. 2006, eq. 1).

    Args:
        t_min: time(s) in minutes since the origin of Parker's fit.
    """
    t = np.asarray(t_min, dtype=np.float64)
    blood = np.zeros_like(t)
    for amplitude, centre, sigma in zip(PARKER_A, PARKER_T, PARKER_SIGMA):
        blood += amplitude / (sigma * np.sqrt(2.0 * np.pi)) * np.exp(-0.5 * ((t - centre) / sigma) ** 2)
    # expit keeps the sigmoid finite for any t (1 / (1 + exp(-s(t - tau))) overflows for very negative t)
    blood += PARKER_ALPHA * np.exp(-PARKER_BETA * t) * expit(PARKER_S * (t - PARKER_TAU))
    return blood


def parker_plasma_aif(t_min: np.ndarray | float, hematocrit: float = HEMATOCRIT) -> np.ndarray:
    """Plasma concentration C_p = C_b / (1 - Hct) in mM from the Parker AIF."""
    return parker_aif(t_min) / (1.0 - hematocrit)


def _linear_exponential_weights(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (q0, q1) / h of the exact integral of exp(-k y) times a linear ramp over one step, x = k h.

    q0 / h = (1 - e^-x) / x and q1 / h = (1 - e^-x (1 + x)) / x^2; a series is used for small x, where the
    closed forms cancel catastrophically.
    """
    small = x < 1e-3
    xs = np.where(small, 1.0, x)
    q0 = np.where(small, 1.0 - x / 2.0 + x ** 2 / 6.0, -np.expm1(-xs) / xs)
    q1 = np.where(small, 0.5 - x / 3.0 + x ** 2 / 8.0 - x ** 3 / 30.0,
                  (1.0 - np.exp(-xs) * (1.0 + xs)) / xs ** 2)
    return q0, q1


def exponential_convolution(t_min: Sequence[float], k_ep: np.ndarray,
                            plasma: Callable[[np.ndarray], np.ndarray] = parker_plasma_aif,
                            step_min: float = CONVOLUTION_STEP_MIN) -> np.ndarray:
    """``I(t; k) = integral_0^t C_p(s) exp(-k (t - s)) ds`` for each time and each rate (the Tofts kernel).

    ``[0, t]`` is cut into ``ceil(t / step)`` equal steps and the integral of the piecewise-linear interpolant of
    ``C_p`` is evaluated in closed form, so the result is exact for linear input and accurate to O(step^2)
    otherwise, for any ``k`` (also ``k * step >> 1``).

    Args:
        t_min: evaluation times in minutes (>= 0).
        k_ep: rates in /min (>= 0), any shape.
        plasma: C_p(s) in mM for an array of times in minutes.
        step_min: maximal grid step in minutes.

    Returns:
        Array of shape ``(len(t_min),) + k_ep.shape`` in mM min.
    """
    k = np.asarray(k_ep, dtype=np.float64)
    flat_k = k.reshape(-1, 1)
    out = np.zeros((len(t_min), flat_k.shape[0]))
    for j, t in enumerate(np.asarray(t_min, dtype=np.float64)):
        if t <= 0:
            continue
        n_steps = max(int(np.ceil(t / step_min - 1e-9)), 1)
        h = t / n_steps
        s = np.linspace(0.0, t, n_steps + 1)
        c = np.asarray(plasma(s), dtype=np.float64)
        q0, q1 = _linear_exponential_weights(flat_k * h)
        # step i spans [s_i, s_i+1]; its contribution is decayed by exp(-k (t - s_i+1))
        decay = np.exp(-flat_k * (t - s[1:]))
        out[j] = h * ((q0 - q1)[:, 0] * (decay @ c[1:]) + q1[:, 0] * (decay @ c[:-1]))
    return out.reshape((len(t_min),) + k.shape)


@functools.lru_cache(maxsize=16)
def _convolution_table(times: tuple[float, ...], plasma: Callable, step_min: float) -> np.ndarray:
    return exponential_convolution(times, K_EP_TABLE, plasma, step_min)


def extended_tofts(t_min: Sequence[float], k_trans: np.ndarray | float, v_e: np.ndarray | float,
                   v_p: np.ndarray | float, plasma: Callable[[np.ndarray], np.ndarray] = parker_plasma_aif,
                   step_min: float = CONVOLUTION_STEP_MIN) -> np.ndarray:
    """Tissue concentration (mM) of the extended Tofts model, vectorised over voxels.

    ``C_t(t) = v_p C_p(t) + K_trans I(t; k_ep)`` with ``k_ep = K_trans / v_e``; ``I`` is interpolated (linearly
    in log k_ep) from a cached table computed by :func:`exponential_convolution`; relative interpolation error is
    below 2e-4.

    Args:
        t_min: evaluation times in minutes.
        k_trans: transfer constant in /min (>= 0).
        v_e: extravascular extracellular volume fraction (> 0 where k_trans > 0).
        v_p: plasma volume fraction.
        plasma: C_p(s) in mM (hashable; the default is the Parker AIF with Hct 0.42).
        step_min: convolution grid step in minutes.

    Returns:
        Array of shape ``(len(t_min),) + broadcast shape of the parameters``.
    """
    times = tuple(float(t) for t in t_min)
    k_trans, v_e, v_p = np.broadcast_arrays(np.asarray(k_trans, np.float64), np.asarray(v_e, np.float64),
                                            np.asarray(v_p, np.float64))
    k_ep = k_trans / np.maximum(v_e, 1e-9)
    log_k = np.log(np.clip(k_ep, K_EP_TABLE[0], K_EP_TABLE[-1]))
    table = _convolution_table(times, plasma, float(step_min))
    log_grid = np.log(K_EP_TABLE)
    c_p = np.asarray(plasma(np.asarray(times)), dtype=np.float64)
    out = np.empty((len(times),) + k_trans.shape)
    for j in range(len(times)):
        out[j] = v_p * c_p[j] + k_trans * np.interp(log_k, log_grid, table[j])
    return out


def spgr_signal(r1_per_s: np.ndarray | float, m0: np.ndarray | float = 1.0, flip_deg: float = FLIP_ANGLE_DEG,
                tr_s: float = REPETITION_TIME_S) -> np.ndarray:
    """Steady-state spoiled gradient-echo signal ``M0 sin(a) (1 - E1) / (1 - cos(a) E1)``, ``E1 = exp(-TR R1)``."""
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr_s * np.asarray(r1_per_s, dtype=np.float64))
    return np.asarray(m0) * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1)


def signal_from_concentration(concentration_mm: np.ndarray | float, r10_per_s: np.ndarray | float,
                              m0: np.ndarray | float = 1.0, flip_deg: float = FLIP_ANGLE_DEG,
                              tr_s: float = REPETITION_TIME_S,
                              relaxivity: float = RELAXIVITY_PER_S_PER_MM) -> np.ndarray:
    """SPGR signal for a contrast-agent concentration: ``R1 = R10 + r1 C`` (fast water exchange)."""
    r1 = np.asarray(r10_per_s, dtype=np.float64) + relaxivity * np.asarray(concentration_mm, dtype=np.float64)
    return spgr_signal(r1, m0, flip_deg, tr_s)


def relative_enhancement(signal: np.ndarray, pre: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``(S - S_pre) / S_pre`` (0.5 means 50 %)."""
    pre = np.asarray(pre, dtype=np.float64)
    return (np.asarray(signal, dtype=np.float64) - pre) / np.maximum(np.abs(pre), eps)


def classify_curves(pre: np.ndarray, early: np.ndarray, late: np.ndarray,
                    initial_thresholds: tuple[float, float] = (0.5, 1.0),
                    delayed_threshold: float = 0.10) -> tuple[np.ndarray, np.ndarray]:
    """BI-RADS MRI kinetic curve type per voxel.

    Args:
        pre, early, late: signals before contrast, at the initial (<= ~2 min) and at the delayed time point.
        initial_thresholds: relative-enhancement bounds between slow/medium and medium/fast.
        delayed_threshold: relative change of the late vs the early signal that separates plateau from
            persistent (rising) and washout (falling).

    Returns:
        ``(initial, delayed)`` integer arrays: indices into :data:`INITIAL_TYPES` (0 slow, 1 medium, 2 fast) and
        :data:`DELAYED_TYPES` (0 persistent, 1 plateau, 2 washout).
    """
    initial_enhancement = relative_enhancement(early, pre)
    initial = np.digitize(initial_enhancement, initial_thresholds, right=True)
    delayed_change = relative_enhancement(late, early)
    delayed = np.where(delayed_change > delayed_threshold, 0, np.where(delayed_change < -delayed_threshold, 2, 1))
    return initial.astype(np.int64), delayed.astype(np.int64)
