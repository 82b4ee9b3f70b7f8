import math

import numpy as np

from calibration.unwrap import unwrap_robust


def _wrap(p):
    return (p + math.pi) % (2 * math.pi) - math.pi


def test_unwraps_a_response_beyond_two_pi():
    g = np.arange(256)
    truth = 7.0 * (g / 255) ** 1.3  # more than a full turn, non-linear
    out = unwrap_robust(_wrap(truth), np.full(256, 0.01))
    np.testing.assert_allclose(out - out[0], truth - truth[0], atol=1e-9)


def test_noisy_levels_do_not_add_spurious_turns():
    rng = np.random.default_rng(3)
    g = np.arange(256)
    truth = 5.5 * g / 255
    measured = truth + rng.normal(0, 0.01, 256)
    std = np.full(256, 0.01)
    bad = np.array([40, 41, 90, 150, 151, 152, 200])
    measured[bad] += rng.choice([-2.5, 2.5], size=bad.size)  # dark levels: phase is anyone's guess
    std[bad] = 1.5
    out = unwrap_robust(_wrap(measured), std)
    good = np.setdiff1d(g, bad)
    np.testing.assert_allclose((out - out[0])[good], (truth - truth[0])[good], atol=0.05)
    # np.unwrap trusts every level and is thrown off by a full turn somewhere after the bad ones.
    naive = np.unwrap(_wrap(measured))
    assert np.max(np.abs((naive - naive[0])[good] - (truth - truth[0])[good])) > 3


def test_every_level_stays_on_its_measured_value_modulo_two_pi():
    rng = np.random.default_rng(0)
    wrapped = rng.uniform(-math.pi, math.pi, 256)
    out = unwrap_robust(wrapped, rng.uniform(0, 1, 256))
    k = (out - wrapped) / (2 * math.pi)
    np.testing.assert_allclose(k, np.rint(k), atol=1e-9)
