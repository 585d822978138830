"""FID, KID and improved precision/recall between two sets of feature vectors (one per row), in
float64 (KID and precision/recall on a chosen device). Features may be numpy arrays or tensors."""
import torch


def _float64(features, device="cpu"):
    return torch.as_tensor(features).to(device=device, dtype=torch.float64)


def mean_and_covariance(features):
    """(mu, sigma): the mean row and the unbiased covariance of ``features`` (N, D)."""
    features = _float64(features)
    return features.mean(0), torch.cov(features.T)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the Frechet distance between N(mu1, S1) and N(mu2, S2).

    S1 S2 is not symmetric, but with S1 = F F^T (F from S1's eigen-decomposition) it has the
    eigenvalues of F^T S2 F, which is symmetric PSD: Tr (S1 S2)^1/2 is the sum of their square roots.
    Round-off negative eigenvalues (singular covariances, N < D) count as 0."""
    mu1, sigma1, mu2, sigma2 = map(_float64, (mu1, sigma1, mu2, sigma2))
    values, vectors = torch.linalg.eigh(sigma1)
    factor = vectors * values.clamp(min=0).sqrt()
    middle = factor.T @ sigma2 @ factor
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)


def kernel_inception_distance(real, fake, num_subsets=100, subset_size=1000, seed=0, device="cpu"):
    """KID: the unbiased estimate of MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, on
    ``num_subsets`` pairs of random subsets (without replacement) of ``subset_size`` rows of each set
    (fewer where a set is smaller). Returns (mean, standard deviation) over the subsets."""
    real, fake = _float64(real, device), _float64(fake, device)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"kernel_inception_distance: needs at least 2 rows in each set, "
                         f"got {len(real)} and {len(fake)}")
    dim = real.shape[1]
    rng = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(num_subsets):
        x = real[torch.randperm(len(real), generator=rng)[:size].to(device)]
        y = fake[torch.randperm(len(fake), generator=rng)[:size].to(device)]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        # Unbiased: a point's kernel with itself is left out of the within-set means.
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (size * (size - 1))
        estimates.append(within - 2 * k_xy.mean())
    estimates = torch.stack(estimates)
    return float(estimates.mean()), float(estimates.std(correction=0))


def _distance_blocks(queries, points, block_size):
    """Euclidean distances from ``queries`` to ``points``, ``block_size`` query rows at a time."""
    for start in range(0, len(queries), block_size):
        yield torch.cdist(queries[start:start + block_size], points)


def _knn_radii(features, k, block_size):
    """Each row's distance to its k-th nearest other row (the k+1-th smallest: the row itself is at 0)."""
    return torch.cat([d.kthvalue(k + 1, dim=1).values for d in _distance_blocks(features, features, block_size)])


def _fraction_covered(queries, centres, radii, block_size):
    """The fraction of ``queries`` inside at least one ball (centre, radius), boundary included."""
    covered = sum(int((d <= radii).any(dim=1).sum()) for d in _distance_blocks(queries, centres, block_size))
    return covered / len(queries)


def precision_recall(real, fake, k=3, block_size=1024, device="cpu"):
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
    balls around its points reaching their k-th nearest neighbour. Precision: the fraction of fake
    points on the real manifold; recall: the fraction of real points on the fake manifold."""
    real, fake = _float64(real, device), _float64(fake, device)
    for name, features in (("real", real), ("fake", fake)):
        if len(features) <= k:
            raise ValueError(f"precision_recall: needs more than k={k} {name} rows, got {len(features)}")
    precision = _fraction_covered(fake, real, _knn_radii(real, k, block_size), block_size)
    recall = _fraction_covered(real, fake, _knn_radii(fake, k, block_size), block_size)
    return precision, recall
