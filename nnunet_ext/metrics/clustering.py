"""Clustering and heterogeneity-prediction metrics of HCNet (Xie et al., MICCAI, Sect. 2.1 and 3.2).

HCNet clusters the normalised time-intensity curves (TICs, ``(S_t - min S) / (max S - min S)``, Sect. 2.1) of the
DCE-MRI voxels of a region of interest (ROI) into K kinetic clusters, scores the clustering with SSE, CPN, SPT, DBN
and TVR (Sect. 3.2, after their ref. [10]) and scores the heterogeneity information prediction model (HIPM), which
predicts the cluster map from non-contrast MRI, with mean accuracy and mean IoU. The paper gives no formulas; the
definitions below are our readings. Notation: ``x_n`` (n = 1..N) the TIC of voxel n, ``C_k`` the voxels of cluster k
(only clusters that occur count, K of them), ``mu_k`` its centroid (mean TIC), ``d(a, b)`` the Euclidean distance.

======  =====================================================================================================
metric  reading
======  =====================================================================================================
SSE     ``sum_k sum_{n in C_k} d(x_n, mu_k)^2 / N``: the sum of squared errors to the own centroid *divided by
        N*. The paper's 0.0532 on [0, 1]-normalised curves of whole ROIs can only be a per-voxel mean (a raw
        sum over thousands of voxels would be orders larger), and the mean lets ROIs of different size compare.
CPN     compactness, ``(1/K) sum_k s_k`` with ``s_k = mean_{n in C_k} d(x_n, mu_k)``: the mean distance of a
        cluster's voxels to its centroid, averaged over clusters without size weights (lower = tighter).
SPT     separation, the mean of ``d(mu_i, mu_j)`` over all pairs i < j (higher = better separated); NaN for
        fewer than 2 clusters.
DBN     Davies-Bouldin index, ``(1/K) sum_i max_{j != i} (s_i + s_j) / d(mu_i, mu_j)``, equal to
        ``sklearn.metrics.davies_bouldin_score`` (see :func:`davies_bouldin` for the edge cases).
TVR     "max of TIC cluster voxel ratio": the highest tumour fraction ``p`` of a cluster, written ``"p/(1-p)"``
        as the paper's "0.95/0.05" (95 % of that cluster is tumour, 5 % is not). Clusters holding less than
        ``min_share`` of the ROI are ignored, else a stray single-voxel cluster inside the tumour gives 1.00/0.00.
======  =====================================================================================================

For the HIPM, mean accuracy is the mean per-class recall over the classes in the reference (sklearn's
``balanced_accuracy_score``) and mean IoU the mean of ``TP / (TP + FP + FN)`` over the classes in the reference or
the prediction (sklearn's ``jaccard_score(average="macro")``). The agreement of a clustering with reference
subregions is the adjusted Rand index and the normalised mutual information (sklearn).

Every clustering figure is computed from per-cluster sums (counts, coordinate sums, distances to the own centroid),
so millions of voxels cost O(N T) time and O(N) extra memory, never an N x N distance matrix.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

#: Rows per block when measuring voxel-to-centroid distances; bounds the temporary (rows, T) difference array.
_CHUNK_ROWS = 1 << 18

#: sklearn's "is zero" test in ``davies_bouldin_score`` (``isclose(x, 0)`` with its default absolute tolerance).
_DB_ZERO_ATOL = 1e-8


class ClusterStats(NamedTuple):
    """Per-cluster sums from which every clustering figure follows (one pass over the voxels)."""

    ids: np.ndarray            # (K,) cluster ids that occur, sorted
    counts: np.ndarray         # (K,) voxels per cluster
    centroids: np.ndarray      # (K, T) mean TIC per cluster
    dist_sums: np.ndarray      # (K,) sum of d(x_n, mu_k) over the cluster
    sq_dist_sums: np.ndarray   # (K,) sum of d(x_n, mu_k)^2 over the cluster


# ----------------------------------------------------------------------------------------------------- validation
def _as_labels(labels, name: str = "labels") -> np.ndarray:
    """Integer label array; integral floats (e.g. read from a NIfTI) are accepted, other floats are not."""
    labels = np.asarray(labels)
    if labels.dtype == bool or np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64, copy=False)
    if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise ValueError(f"{name} must hold integers, got dtype {labels.dtype}")


def _check_points_labels(points, labels) -> tuple[np.ndarray, np.ndarray]:
    """``points`` as a finite float (N, T) array and ``labels`` as an (N,) integer array; ValueError otherwise."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] == 0:
        raise ValueError(f"points must be an (N, T) array of TICs with T >= 1, got shape {points.shape}")
    labels = _as_labels(labels)
    if labels.shape != (points.shape[0],):
        raise ValueError(f"labels of shape {labels.shape} do not match {points.shape[0]} points")
    if points.shape[0] == 0:
        raise ValueError("no points: clustering metrics need at least one TIC")
    # A flat curve normalised by (max - min) = 0 gives NaN; say so instead of propagating it into every figure.
    if not np.all(np.isfinite(points)):
        raise ValueError("points contain NaN or inf (a constant TIC normalised by max - min = 0?)")
    return points, labels


# ------------------------------------------------------------------------------------------------ per-cluster sums
def _centroids_from_inverse(points: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``mu_k = (1/|C_k|) sum_{n in C_k} x_n`` via one weighted bincount per time point (no per-cluster copies)."""
    n_clusters = counts.shape[0]
    sums = np.stack([np.bincount(inverse, weights=points[:, t], minlength=n_clusters)
                     for t in range(points.shape[1])], axis=1)
    return sums / counts[:, None]


def _squared_distances_to_own_centroid(points: np.ndarray, inverse: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``d(x_n, mu_{k(n)})^2`` for every voxel, in blocks so the temporary difference array stays small."""
    squared = np.empty(points.shape[0])
    for start in range(0, points.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        diff = points[start:stop] - centroids[inverse[start:stop]]
        squared[start:stop] = np.einsum("ij,ij->i", diff, diff)
    return squared


def cluster_stats(points, labels) -> ClusterStats:
    """Counts, centroids and summed (squared) distances to the own centroid of every cluster that occurs.

    Args:
        points: (N, T) normalised TICs.
        labels: (N,) integer cluster ids (any integers).

    Returns:
        :class:`ClusterStats`, clusters in ascending id order.
    """
    points, labels = _check_points_labels(points, labels)
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centroids = _centroids_from_inverse(points, inverse, counts)
    squared = _squared_distances_to_own_centroid(points, inverse, centroids)
    return ClusterStats(ids=ids, counts=counts, centroids=centroids,
                        dist_sums=np.bincount(inverse, weights=np.sqrt(squared), minlength=ids.shape[0]),
                        sq_dist_sums=np.bincount(inverse, weights=squared, minlength=ids.shape[0]))


def cluster_centroids(points, labels) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the clusters that occur (sorted) and their centroids ``mu_k`` (mean TIC), shape (K, T)."""
    stats = cluster_stats(points, labels)
    return stats.ids, stats.centroids


def _centroid_distances(centroids: np.ndarray) -> np.ndarray:
    """(K, K) matrix of ``d(mu_i, mu_j)`` from exact differences (K is small: the codebook size)."""
    diff = centroids[:, None, :] - centroids[None, :, :]
    return np.sqrt(np.einsum("ijt,ijt->ij", diff, diff))


# ------------------------------------------------------------------------------------------- figures from the sums
def sse_from_stats(stats: ClusterStats) -> float:
    """``SSE = (1/N) sum_k sum_{n in C_k} d(x_n, mu_k)^2`` (per-voxel mean, see the module docstring)."""
    return float(stats.sq_dist_sums.sum() / stats.counts.sum())


def compactness_from_stats(stats: ClusterStats) -> float:
    """``CPN = (1/K) sum_k s_k`` with ``s_k`` the mean distance of cluster k's voxels to ``mu_k`` (unweighted)."""
    return float(np.mean(stats.dist_sums / stats.counts))


def separation_from_stats(stats: ClusterStats) -> float:
    """``SPT = mean_{i<j} d(mu_i, mu_j)``; NaN for fewer than 2 clusters (no pair to separate)."""
    n_clusters = stats.ids.shape[0]
    if n_clusters < 2:
        return math.nan
    upper = np.triu_indices(n_clusters, k=1)
    return float(np.mean(_centroid_distances(stats.centroids)[upper]))


def davies_bouldin_from_stats(stats: ClusterStats) -> float:
    """Davies-Bouldin index from the per-cluster sums; edge cases as sklearn (see :func:`davies_bouldin`)."""
    if stats.ids.shape[0] < 2:
        return math.nan
    spread = stats.dist_sums / stats.counts
    centroid_dist = _centroid_distances(stats.centroids)
    # sklearn's shortcut: all clusters collapsed to points, or all centroids coincide -> 0.0 (not 0/0).
    if np.all(np.abs(spread) <= _DB_ZERO_ATOL) or np.all(np.abs(centroid_dist) <= _DB_ZERO_ATOL):
        return 0.0
    # A pair with coincident centroids (and the diagonal i == j) gets d = inf, i.e. R_ij = 0: it is skipped in the
    # max instead of dividing by zero. This is sklearn's rule too.
    centroid_dist[centroid_dist == 0] = np.inf
    ratios = (spread[:, None] + spread[None, :]) / centroid_dist
    return float(np.mean(np.max(ratios, axis=1)))


# ------------------------------------------------------------------------------------------------- public figures
def sse(points, labels) -> float:
    """Sum of squared errors to the own centroid, per voxel (Sect. 3.2 "SSE", our reading).

    ``SSE = (1/N) sum_k sum_{n in C_k} ||x_n - mu_k||_2^2``. Divided by N because the paper's SSE of 0.0532 on
    [0, 1]-normalised TICs of whole ROIs can only be a per-voxel mean, and so ROIs of different size compare.
    """
    return sse_from_stats(cluster_stats(points, labels))


def compactness(points, labels) -> float:
    """Intra-cluster compactness CPN (Sect. 3.2, our reading); lower is tighter.

    ``CPN = (1/K) sum_k s_k``, ``s_k = (1/|C_k|) sum_{n in C_k} ||x_n - mu_k||_2``; every cluster weighs the
    same, whatever its size. A single-voxel or constant-TIC cluster has ``s_k = 0``.
    """
    return compactness_from_stats(cluster_stats(points, labels))


def separation(points, labels) -> float:
    """Inter-cluster separability SPT (Sect. 3.2, our reading); higher is better separated.

    ``SPT = (2 / (K (K - 1))) sum_{i<j} ||mu_i - mu_j||_2``, the mean distance over all pairs of centroids.
    Returns NaN for fewer than 2 clusters: with no pair, separation is undefined (0.0 would read as "overlapping").
    """
    return separation_from_stats(cluster_stats(points, labels))


def davies_bouldin(points, labels) -> float:
    """Davies-Bouldin index DBN (Sect. 3.2); lower is better. Own implementation, equal to sklearn's.

    ``s_i = (1/|C_i|) sum_{n in C_i} ||x_n - mu_i||``, ``R_ij = (s_i + s_j) / ||mu_i - mu_j||``,
    ``DBN = (1/K) sum_i max_{j != i} R_ij``.

    Edge cases, following ``sklearn.metrics.davies_bouldin_score`` 1.x:

    * every ``s_i`` is (close to, ``|s| <= 1e-8``) zero, or every centroid distance is: returns 0.0;
    * a pair with coincident centroids (``d_ij == 0``) gets ``R_ij = 0``, i.e. it is left out of the max;
    * fewer than 2 clusters: returns NaN where sklearn raises, so a report of a degenerate case still completes;
    * every voxel its own cluster (K == N): returns 0.0 (all ``s_i = 0``) where sklearn raises.

    Centroid distances here come from exact differences, sklearn's from ``|a|^2 + |b|^2 - 2 a.b``; the two agree to
    rounding, except that sklearn may see a tiny nonzero distance between centroids that are equal up to rounding.
    """
    return davies_bouldin_from_stats(cluster_stats(points, labels))


# ------------------------------------------------------------------------------------------------------------ TVR
def _safe_ratio(numerator: np.ndarray, denominator) -> np.ndarray:
    """``numerator / denominator`` with 0.0 where the denominator is 0 (an empty bar, not NaN)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _cluster_counts(labels: np.ndarray, tumour: np.ndarray, n_clusters: int | None):
    """Cluster ids, voxel counts and tumour-voxel counts, over 0..n_clusters-1 or over the ids that occur."""
    if n_clusters is None:
        ids, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
    else:
        if labels.min() < 0 or labels.max() >= n_clusters:
            raise ValueError(f"labels must lie in [0, {n_clusters}), got [{labels.min()}, {labels.max()}]")
        ids, inverse = np.arange(n_clusters), labels
    counts = np.bincount(inverse, minlength=ids.shape[0])
    tumour_counts = np.bincount(inverse, weights=tumour.astype(np.float64), minlength=ids.shape[0])
    return ids, counts, tumour_counts.astype(np.int64)


def _tvr_choice(fractions: np.ndarray, roi_shares: np.ndarray, min_share: float) -> int | None:
    """Index of the TVR cluster: highest tumour fraction among clusters with ``roi_share >= min_share``.

    Ties go to the larger cluster (then the lower id), so the reported cluster is the most representative one.
    """
    eligible = np.flatnonzero(roi_shares >= min_share)
    if eligible.size == 0:
        return None
    order = np.lexsort((eligible, -roi_shares[eligible], -fractions[eligible]))
    return int(eligible[order[0]])


def tumour_cluster_shares(labels, tumour, n_clusters: int | None = None, min_share: float = 0.01) -> dict:
    """Tumour share per cluster and the TVR (Sect. 3.2 "TVR", Fig. 2c; our reading).

    For cluster c with voxels ``C_c``, tumour voxels ``U`` and non-tumour voxels ``V`` of the ROI (N voxels):

    * ``tumour_fraction = |C_c & U| / |C_c|`` (how pure a tumour cluster is),
    * ``roi_share = |C_c| / N``,
    * ``share_of_tumour = |C_c & U| / |U|`` and ``share_of_non_tumour = |C_c & V| / |V|`` (the paired bars of
      Fig. 2c: where the tumour's, and the rest's, voxels go).

    ``TVR``: ``p = max tumour_fraction`` over clusters with ``roi_share >= min_share``, written ``f"{p:.2f}/{1-p:.2f}"``
    ("0.95/0.05"). The size floor keeps a stray tiny all-tumour cluster from giving a meaningless 1.00/0.00. An
    empty denominator gives 0.0, so an ROI without tumour voxels has ``p = 0``. If no cluster reaches ``min_share``
    ``tvr_p`` is NaN and ``tvr_cluster`` None.

    Args:
        labels: integer cluster ids, any shape.
        tumour: bool mask of the same shape, True inside the tumour label.
        n_clusters: if given, report clusters 0..n_clusters-1 including unused codebook entries (all zeros);
            labels must lie in that range. Otherwise only clusters that occur.
        min_share: minimum ROI share of a cluster to count for the TVR, in [0, 1].

    Returns:
        ``{"tvr_p": float, "tvr_text": str, "tvr_cluster": int | None, "per_cluster": {id: {...}}}``; the
        per-cluster dict also holds the voxel and tumour-voxel counts.
    """
    labels = _as_labels(labels).reshape(-1)
    tumour = np.asarray(tumour)
    if tumour.size != labels.size:
        raise ValueError(f"tumour mask has {tumour.size} voxels, labels have {labels.size}")
    if labels.size == 0:
        raise ValueError("no voxels: tumour_cluster_shares needs a non-empty ROI")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must lie in [0, 1], got {min_share}")
    tumour = tumour.reshape(-1).astype(bool)
    ids, counts, tumour_counts = _cluster_counts(labels, tumour, n_clusters)
    n_tumour = int(tumour_counts.sum())
    fractions = _safe_ratio(tumour_counts, counts)
    roi_shares = counts / labels.size
    of_tumour = _safe_ratio(tumour_counts, n_tumour)
    of_rest = _safe_ratio(counts - tumour_counts, labels.size - n_tumour)
    per_cluster = {int(c): {"voxels": int(counts[i]), "tumour_voxels": int(tumour_counts[i]),
                            "tumour_fraction": float(fractions[i]), "roi_share": float(roi_shares[i]),
                            "share_of_tumour": float(of_tumour[i]), "share_of_non_tumour": float(of_rest[i])}
                   for i, c in enumerate(ids)}
    chosen = _tvr_choice(fractions, roi_shares, min_share)
    p = math.nan if chosen is None else float(fractions[chosen])
    return {"tvr_p": p, "tvr_text": f"{p:.2f}/{1 - p:.2f}",
            "tvr_cluster": None if chosen is None else int(ids[chosen]), "per_cluster": per_cluster}


# --------------------------------------------------------------------------------------- agreement and the HIPM
def subregion_agreement(labels, truth) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information of a clustering against reference subregions.

    Both ignore how clusters are numbered (a relabelled perfect clustering scores 1). Library calls (sklearn).
    """
    labels, truth = _as_labels(labels).reshape(-1), _as_labels(truth, "truth").reshape(-1)
    if labels.shape != truth.shape:
        raise ValueError(f"labels ({labels.size} voxels) and truth ({truth.size} voxels) differ in size")
    if labels.size == 0:
        raise ValueError("no voxels: subregion_agreement needs non-empty labels")
    return {"ari": float(adjusted_rand_score(truth, labels)), "nmi": float(normalized_mutual_info_score(truth, labels))}


def confusion_matrix(prediction, truth, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = truth class, columns = predicted class (sklearn's layout).

    ``M[i, j] = |{n : truth_n = i, prediction_n = j}|``, one ``np.bincount`` of ``truth * n_classes + prediction``.
    Arrays of any (equal) shape with values in [0, n_classes); ValueError otherwise.
    """
    prediction, truth = _as_labels(prediction, "prediction").reshape(-1), _as_labels(truth, "truth").reshape(-1)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction ({prediction.size} voxels) and truth ({truth.size} voxels) differ in size")
    if prediction.size == 0:
        raise ValueError("no voxels: confusion_matrix needs non-empty arrays")
    for name, values in (("prediction", prediction), ("truth", truth)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(f"{name} values must lie in [0, {n_classes}), got [{values.min()}, {values.max()}]")
    flat = truth * n_classes + prediction
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def mean_class_accuracy(prediction, truth, n_classes: int) -> float:
    """HIPM mean accuracy (Sect. 3.2): mean per-class recall over the classes present in the truth.

    ``(1/|P|) sum_{c in P} M[c, c] / sum_j M[c, j]`` with ``P = {c : c occurs in truth}``. A class only predicted
    has no recall and is left out, as in ``sklearn.metrics.balanced_accuracy_score`` (which it equals).
    """
    return accuracy_from_confusion(confusion_matrix(prediction, truth, n_classes))


def accuracy_from_confusion(matrix: np.ndarray) -> float:
    """:func:`mean_class_accuracy` of a confusion matrix (e.g. one pooled over several cases)."""
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def mean_iou(prediction, truth, n_classes: int) -> float:
    """HIPM mean IoU (Sect. 3.2): mean of ``TP / (TP + FP + FN)`` over classes present in truth or prediction.

    With ``M`` the confusion matrix, ``TP_c = M[c, c]``, ``TP_c + FP_c + FN_c = sum_j M[j, c] + sum_j M[c, j] -
    M[c, c]``. Classes absent from both have 0/0 and are left out. This equals
    ``sklearn.metrics.jaccard_score(truth, prediction, average="macro")``, whose default label set is exactly the
    classes in truth or prediction; passing sklearn a ``labels`` list with an absent class would score it 0 (its
    ``zero_division``) and pull the mean down, which we do not do.
    """
    return iou_from_confusion(confusion_matrix(prediction, truth, n_classes))


def iou_from_confusion(matrix: np.ndarray) -> float:
    """:func:`mean_iou` of a confusion matrix (e.g. one pooled over several cases)."""
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


# --------------------------------------------------------------------------------------------------------- report
def clustering_report(points, labels, tumour=None, truth=None, min_share: float = 0.01) -> dict:
    """All clustering figures of Sect. 3.2 for one ROI, from a single pass over the voxels.

    Args:
        points: (N, T) normalised TICs.
        labels: (N,) integer cluster ids.
        tumour: optional (N,) bool tumour mask; adds ``tvr_p``, ``tvr_text``, ``tvr_cluster``, ``per_cluster``.
        truth: optional (N,) integer reference subregions; adds ``ari`` and ``nmi``.
        min_share: ROI share below which a cluster does not count for the TVR.

    Returns:
        dict with ``sse``, ``cpn``, ``spt``, ``dbn`` (floats; ``spt``/``dbn`` NaN for a single cluster) and
        ``used_clusters`` (number of distinct labels), plus the optional keys above.
    """
    stats = cluster_stats(points, labels)
    report = {"sse": sse_from_stats(stats), "cpn": compactness_from_stats(stats),
              "spt": separation_from_stats(stats), "dbn": davies_bouldin_from_stats(stats),
              "used_clusters": int(stats.ids.shape[0])}
    if tumour is not None:
        shares = tumour_cluster_shares(labels, tumour, min_share=min_share)
        report.update({key: shares[key] for key in ("tvr_p", "tvr_text", "tvr_cluster", "per_cluster")})
    if truth is not None:
        report.update(subregion_agreement(labels, truth))
    return report
