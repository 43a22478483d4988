"""Tests of nnunet_ext.synth.kinetics: Parker AIF, extended Tofts, SPGR signal, BI-RADS curve types."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from nnunet_ext.synth import kinetics


def parker_by_hand(t):
    """Parker et al. 2006 eq. 1 typed in scalar form, independent of the module's implementation."""
    g1 = 0.809 / (0.0563 * math.sqrt(2 * math.pi)) * math.exp(-((t - 0.17046) ** 2) / (2 * 0.0563 ** 2))
    g2 = 0.330 / (0.132 * math.sqrt(2 * math.pi)) * math.exp(-((t - 0.365) ** 2) / (2 * 0.132 ** 2))
    return g1 + g2 + 1.050 * math.exp(-0.1685 * t) / (1 + math.exp(-38.078 * (t - 0.483)))


def constant_plasma(s):
    return np.full_like(np.asarray(s, dtype=float), 2.0)


@pytest.mark.parametrize("t", [0.05, 0.17046, 0.365, 0.483, 1.0, 1.5, 6.5, 10.0])
def test_parker_aif_matches_hand_formula(t):
    assert kinetics.parker_aif(t) == pytest.approx(parker_by_hand(t), rel=1e-12)
    assert kinetics.parker_plasma_aif(t) == pytest.approx(parker_by_hand(t) / (1 - 0.42), rel=1e-12)


def test_parker_aif_first_pass_peak():
    t = np.linspace(0.0, 1.0, 100001)
    blood = kinetics.parker_aif(t)
    peak_time = t[np.argmax(blood)]
    assert 0.165 < peak_time < 0.18  # first Gaussian centre 0.17046 min, shifted slightly by the second one
    assert blood.max() == pytest.approx(parker_by_hand(peak_time), rel=1e-12)
    assert 6.0 < blood.max() < 6.15  # ~5.73 mM (first Gaussian) + ~0.33 mM (second) at the peak
    assert np.all(np.isfinite(kinetics.parker_aif(np.array([-50.0, 0.0, 100.0]))))


@pytest.mark.parametrize("k_trans, v_e, v_p", [(0.5, 0.3, 0.05), (1.0, 0.2, 0.1), (0.05, 0.4, 0.0),
                                               (0.02, 0.8, 0.003)])
def test_tofts_constant_input_analytic(k_trans, v_e, v_p):
    # C_p = c0 constant: C_t(t) = v_p c0 + v_e c0 (1 - exp(-k_ep t))
    times = [0.3, 1.5, 6.5]
    k_ep = k_trans / v_e
    expected = [v_p * 2.0 + v_e * 2.0 * (1 - math.exp(-k_ep * t)) for t in times]
    got = kinetics.extended_tofts(times, k_trans, v_e, v_p, plasma=constant_plasma)
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    exact = kinetics.exponential_convolution(times, np.array([k_ep]), constant_plasma)[:, 0]
    np.testing.assert_allclose(k_trans * exact + v_p * 2.0, expected, rtol=1e-10)


@pytest.mark.parametrize("k_trans, v_e, v_p", [(0.6, 0.35, 0.05), (0.1, 0.3, 0.01), (1.0, 0.2, 0.08)])
def test_tofts_parker_matches_quadrature(k_trans, v_e, v_p):
    times = [0.25, 1.5, 6.5]
    k_ep = k_trans / v_e
    expected = []
    for t in times:
        integral, _ = quad(lambda s: parker_by_hand(s) / 0.58 * math.exp(-k_ep * (t - s)), 0.0, t,
                           points=[p for p in (0.17046, 0.365, 0.483) if p < t], limit=200, epsabs=1e-12)
        expected.append(v_p * parker_by_hand(t) / 0.58 + k_trans * integral)
    np.testing.assert_allclose(kinetics.extended_tofts(times, k_trans, v_e, v_p), expected, rtol=1e-3)


def test_tofts_is_vectorised_and_reduces_to_plasma_term():
    rng = np.random.default_rng(0)
    k_trans, v_e = rng.uniform(0.0, 1.0, (4, 5)), rng.uniform(0.1, 0.6, (4, 5))
    both = kinetics.extended_tofts([1.5, 6.5], k_trans, v_e, 0.02)
    assert both.shape == (2, 4, 5)
    assert both[1, 2, 3] == pytest.approx(kinetics.extended_tofts([1.5, 6.5], k_trans[2, 3], v_e[2, 3], 0.02)[1])
    plasma_only = kinetics.extended_tofts([1.5], 0.0, 0.3, 0.5)
    assert plasma_only[0] == pytest.approx(0.5 * parker_by_hand(1.5) / 0.58, rel=1e-12)


def test_spgr_signal_at_zero_concentration_and_monotone():
    r10, m0, flip, tr = 1 / 1.3, 0.85, 12.0, 0.005
    e1 = math.exp(-tr * r10)
    a = math.radians(flip)
    expected = m0 * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1)
    assert kinetics.signal_from_concentration(0.0, r10, m0, flip, tr) == pytest.approx(expected, rel=1e-12)
    assert kinetics.spgr_signal(r10, m0, flip, tr) == pytest.approx(expected, rel=1e-12)
    signal = kinetics.signal_from_concentration(np.linspace(0.0, 10.0, 200), r10, m0)
    assert np.all(np.diff(signal) > 0)


@pytest.mark.parametrize("curve, initial, delayed", [
    ((100, 130, 150), "slow", "persistent"),
    ((100, 170, 172), "medium", "plateau"),
    ((100, 250, 200), "fast", "washout"),
    ((100, 220, 230), "fast", "plateau"),
    ((100, 145, 120), "slow", "washout"),
    ((100, 190, 230), "medium", "persistent"),
])
def test_curve_type_classification(curve, initial, delayed):
    pre, early, late = (np.array([v], dtype=float) for v in curve)
    got_initial, got_delayed = kinetics.classify_curves(pre, early, late)
    assert kinetics.INITIAL_TYPES[got_initial[0]] == initial
    assert kinetics.DELAYED_TYPES[got_delayed[0]] == delayed


def test_tofts_malignant_vs_benign_curve_types():
    # textbook expectation: high K_trans -> fast + washout; low K_trans -> slow/medium + persistent
    concentration = kinetics.extended_tofts([1.5, 6.5], np.array([0.8, 0.05]), np.array([0.35, 0.5]),
                                            np.array([0.05, 0.01]))
    signal = kinetics.signal_from_concentration(np.concatenate([np.zeros((1, 2)), concentration]), 1 / 1.3)
    initial, delayed = kinetics.classify_curves(*signal)
    assert [kinetics.INITIAL_TYPES[i] for i in initial] == ["fast", "medium"]
    assert [kinetics.DELAYED_TYPES[i] for i in delayed] == ["washout", "persistent"]
