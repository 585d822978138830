"""FID against closed-form Gaussians, precision/recall on hand-made point sets, KID on samples."""
import math

import numpy as np
import pytest
import torch

from training.metrics import frechet_distance, kernel_inception_distance, mean_and_covariance, precision_recall


def random_rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def trace_sqrt_product_2x2(s1, s2):
    # The two eigenvalues l1, l2 of S1 S2 are positive: (sqrt l1 + sqrt l2)^2 = Tr(S1 S2) + 2 sqrt(det S1 det S2).
    return math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))


def test_frechet_distance_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_commuting_covariances():
    rng = np.random.default_rng(1)
    q = random_rotation(8, seed=1)
    a, b = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_non_commuting_covariances():
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    expected = 8.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product_2x2(s1, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_singular_covariances():
    # Fewer samples than dimensions (as with N < 2048 Inception features): rank-deficient, still finite and >= 0.
    features = np.random.default_rng(2).standard_normal((5, 12))
    mu, sigma = mean_and_covariance(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_samples_approaches_closed_form():
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    expected = 2.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product_2x2(s1, s2)
    rng = np.random.default_rng(3)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert frechet_distance(*mean_and_covariance(x), *mean_and_covariance(y)) == pytest.approx(expected, rel=0.02)


def test_mean_and_covariance_match_numpy():
    features = np.random.default_rng(4).standard_normal((50, 3))
    mu, sigma = mean_and_covariance(features)
    assert mu.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), features.mean(0))
    np.testing.assert_allclose(sigma.numpy(), np.cov(features, rowvar=False))


def on_a_line(*values):
    """Points (x, 0) in 2-D."""
    return np.stack([np.asarray(values, dtype=float), np.zeros(len(values))], axis=1)


def test_precision_recall_identical_sets():
    points = np.random.default_rng(5).standard_normal((40, 5))
    assert precision_recall(points, points.copy()) == (1.0, 1.0)


def test_precision_recall_disjoint_far_apart_sets():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((30, 5))
    assert precision_recall(real, rng.standard_normal((30, 5)) + 1000) == (0.0, 0.0)


def test_precision_recall_fake_covers_half_of_real():
    # Real: 0..9 and 1000..1009; k = 3 radii are 2 or 3 in each cluster. Fake: 0, 0.5, ..., 9.5,
    # radii 1 or 1.5, so only the real cluster at 0..9 lies on the fake manifold.
    real = on_a_line(*range(10), *range(1000, 1010))
    fake = on_a_line(*np.arange(0, 10, 0.5))
    assert precision_recall(real, fake, k=3) == (1.0, 0.5)


def test_precision_recall_half_of_fake_off_real():
    # Real 0..9: the largest radius (3, at the ends) reaches 12, so fake 20..29 is off it.
    real = on_a_line(*range(10))
    fake = on_a_line(*range(10), *range(20, 30))
    assert precision_recall(real, fake, k=3) == (0.5, 1.0)


def test_precision_recall_counts_ball_boundaries_and_uses_k():
    # Real 0, 1, 2, 3: the 1-NN radius is 1 for every point, the 3-NN radius 3 or 2.
    # The fake point 4 is at distance exactly 1 from 3; 5.5 is 2.5 away, inside only 3-NN balls.
    real = on_a_line(0, 1, 2, 3)
    fake = on_a_line(4, 5.5, 6.5, 7.5)
    assert precision_recall(real, fake, k=1)[0] == 0.25
    assert precision_recall(real, fake, k=3)[0] == 0.5


def test_precision_recall_needs_more_points_than_k():
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(7)
    real = rng.standard_normal((400, 16))
    same = rng.standard_normal((400, 16))
    shifted = rng.standard_normal((400, 16)) + 0.5
    kid_same, std_same = kernel_inception_distance(real, same, num_subsets=10, subset_size=200)
    kid_shifted, _ = kernel_inception_distance(real, shifted, num_subsets=10, subset_size=200)
    assert abs(kid_same) < 3 * std_same
    assert kid_shifted > 0.5 > 20 * (abs(kid_same) + std_same)


def test_kid_is_deterministic_given_its_seed():
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((50, 4)), rng.standard_normal((60, 4))
    assert kernel_inception_distance(real, fake, 5, 20) == kernel_inception_distance(real, fake, 5, 20)


def test_kid_matches_the_unbiased_mmd_on_whole_sets():
    # With one subset as large as both sets, KID is the textbook unbiased MMD^2 of the two sets.
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 1

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    n = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    between = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n ** 2
    kid, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=100)
    assert kid == pytest.approx(within - 2 * between, rel=1e-12)
    assert std == 0
