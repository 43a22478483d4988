"""HCNet clustering and HIPM metrics (Xie et al., MICCAI, Sect. 2.1 and 3.2): analytic cases and sklearn references."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_blobs

from nnunet_ext.metrics import clustering
from nnunet_ext.metrics.clustering import (cluster_centroids, clustering_report, compactness, confusion_matrix,
                                           davies_bouldin, mean_class_accuracy, mean_iou, separation, sse,
                                           subregion_agreement, tumour_cluster_shares)

# Two clusters in the plane with hand-computed figures. Cluster 7: (0,0), (2,0) -> centroid (1,0), distances 1, 1.
# Cluster -3: (5,1), (5,-1), (3,0), (7,0) -> centroid (5,0), distances 1, 1, 2, 2.
TWO_POINTS = np.array([[0, 0], [2, 0], [5, 1], [5, -1], [3, 0], [7, 0]], dtype=float)
TWO_LABELS = np.array([7, 7, -3, -3, -3, -3])
TWO_SSE = (1 + 1 + 1 + 1 + 4 + 4) / 6           # per-voxel mean of squared distances = 2.0
TWO_CPN = (1.0 + 1.5) / 2                        # s_7 = 1, s_-3 = 1.5, unweighted mean
TWO_SPT = 4.0                                    # |(1,0) - (5,0)|
TWO_DBN = (1.0 + 1.5) / 4.0                      # both clusters' max ratio is (s_7 + s_-3) / 4


def _permuted(seed):
    order = np.random.default_rng(seed).permutation(len(TWO_LABELS))
    return TWO_POINTS[order], TWO_LABELS[order]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sse_cpn_spt_dbn_on_hand_computed_two_clusters(seed):
    """Sect. 3.2 SSE, CPN, SPT, DBN: hand values, independent of voxel order and of the label values."""
    points, labels = _permuted(seed)
    assert sse(points, labels) == pytest.approx(TWO_SSE)
    assert compactness(points, labels) == pytest.approx(TWO_CPN)
    assert separation(points, labels) == pytest.approx(TWO_SPT)
    assert davies_bouldin(points, labels) == pytest.approx(TWO_DBN)


def test_centroids_are_sorted_by_id():
    """Sect. 2.1 cluster centres: mean TIC per cluster, ids ascending."""
    ids, centroids = cluster_centroids(TWO_POINTS, TWO_LABELS)
    assert ids.tolist() == [-3, 7]
    np.testing.assert_allclose(centroids, [[5.0, 0.0], [1.0, 0.0]])


def test_separation_is_mean_over_all_centroid_pairs():
    """Sect. 3.2 SPT: centroids on a 3-4-5 triangle (single-point clusters) give (3 + 4 + 5) / 3 = 4."""
    points = np.array([[0, 0], [3, 0], [0, 4]], dtype=float)
    labels = np.array([0, 1, 2])
    assert separation(points, labels) == pytest.approx(4.0)
    assert compactness(points, labels) == 0.0 and sse(points, labels) == 0.0


def _reference_sse_cpn(points, labels):
    """Brute-force per-cluster loop, written independently of the module's bincount route."""
    squared, spreads = 0.0, []
    for cluster in np.unique(labels):
        members = points[labels == cluster]
        dist = np.linalg.norm(members - members.mean(axis=0), axis=1)
        squared += float(np.sum(dist ** 2))
        spreads.append(float(dist.mean()))
    return squared / len(points), float(np.mean(spreads))


@pytest.mark.parametrize("chunk", [3, 1 << 18])
def test_sse_cpn_match_brute_force_with_and_without_chunking(monkeypatch, chunk):
    """Sect. 3.2 SSE and CPN on random TICs; a tiny chunk exercises the blockwise distance pass."""
    monkeypatch.setattr(clustering, "_CHUNK_ROWS", chunk)
    rng = np.random.default_rng(5)
    points = rng.random((53, 6))
    labels = rng.integers(0, 4, 53) * 10
    expected_sse, expected_cpn = _reference_sse_cpn(points, labels)
    assert sse(points, labels) == pytest.approx(expected_sse, rel=1e-12)
    assert compactness(points, labels) == pytest.approx(expected_cpn, rel=1e-12)


@pytest.mark.parametrize("n_clusters", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", [0, 11])
def test_davies_bouldin_matches_sklearn_on_blobs(n_clusters, seed):
    """Sect. 3.2 DBN equals sklearn.metrics.davies_bouldin_score on blob sets (blob and shuffled labels)."""
    points, blob_labels = make_blobs(n_samples=120, centers=n_clusters, n_features=6, random_state=seed)
    mixed = np.random.default_rng(seed).integers(0, n_clusters, len(points))  # overlapping clusters
    for labels in (blob_labels, mixed):
        if len(np.unique(labels)) < 2:
            continue
        expected = skm.davies_bouldin_score(points, labels)
        assert davies_bouldin(points, labels * 3 - 1) == pytest.approx(expected, rel=1e-9)


def test_davies_bouldin_coincident_centroids_skipped_like_sklearn():
    """Sect. 3.2 DBN: a pair with d_ij = 0 is left out of the max (sklearn's rule), here giving 0.4 exactly."""
    points = np.array([[0, 0], [2, 2], [0, 2], [2, 0], [5, 5], [7, 7]], dtype=float)
    labels = np.array([0, 0, 1, 1, 2, 2])  # clusters 0 and 1 share the centroid (1, 1); cluster 2 sits at (6, 6)
    # s = sqrt(2) for all three, d(0,2) = d(1,2) = 5 sqrt(2): every row's max ratio is 2 sqrt(2) / 5 sqrt(2) = 0.4.
    assert davies_bouldin(points, labels) == pytest.approx(0.4)
    assert skm.davies_bouldin_score(points, labels) == pytest.approx(0.4)


@pytest.mark.parametrize("offsets", [(0.2, 0.7), (0.5, 0.5)])
def test_davies_bouldin_constant_clusters_like_sklearn(offsets):
    """Sect. 3.2 DBN: clusters of constant TICs (all s_i = 0), apart or coincident, give sklearn's 0.0."""
    points = np.concatenate([np.full((4, 5), offsets[0]), np.full((3, 5), offsets[1])])
    labels = np.array([0] * 4 + [1] * 3)
    assert skm.davies_bouldin_score(points, labels) == 0.0
    assert davies_bouldin(points, labels) == 0.0


def test_single_cluster_gives_nan_separation_and_dbn():
    """Sect. 3.2 SPT and DBN need two clusters: NaN (sklearn raises instead), SSE and CPN still defined."""
    points = np.array([[0.0, 1.0], [1.0, 1.0]])
    labels = np.array([4, 4])
    assert math.isnan(separation(points, labels)) and math.isnan(davies_bouldin(points, labels))
    assert sse(points, labels) == pytest.approx(0.25) and compactness(points, labels) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        skm.davies_bouldin_score(points, labels)


def test_constant_and_single_point_clusters_are_finite_without_warnings():
    """Sect. 3.2 report on degenerate clusters (constant TICs, one voxel): finite figures, no NaN warnings."""
    rng = np.random.default_rng(3)
    points = np.concatenate([np.full((5, 6), 0.3), rng.random((1, 6)), rng.random((8, 6))])
    labels = np.array([0] * 5 + [1] + [2] * 8)
    tumour = np.arange(14) % 2 == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = clustering_report(points, labels, tumour=tumour, truth=labels)
    for key in ("sse", "cpn", "spt", "dbn", "tvr_p", "ari", "nmi"):
        assert math.isfinite(report[key]), key
    assert report["used_clusters"] == 3
    assert report["cpn"] == pytest.approx(np.mean([0.0, 0.0, _reference_sse_cpn(points[6:], labels[6:])[1]]))
    # sklearn's |a|^2 + |b|^2 - 2 a.b distances give the constant cluster a spread of ~1e-8 (rounding noise) where
    # exact differences give 0, hence the looser tolerance here than on the blob sets.
    assert report["dbn"] == pytest.approx(skm.davies_bouldin_score(points, labels), rel=1e-6)


def test_identical_tics_in_two_clusters_are_finite():
    """Sect. 3.2: every TIC equal (coincident centroids, zero spread) gives SPT 0 and DBN 0, no NaN."""
    points = np.full((6, 4), 0.5)
    labels = np.array([0, 0, 0, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = clustering_report(points, labels)
    assert (report["sse"], report["cpn"], report["spt"], report["dbn"]) == (0.0, 0.0, 0.0, 0.0)


def _tvr_case():
    """1000 ROI voxels: A (id 3) 400 voxels 95 % tumour; B (id 8) 5 voxels all tumour (0.5 % < 1 %); C (id 1) rest."""
    labels = np.array([3] * 400 + [8] * 5 + [1] * 595)
    tumour = np.zeros(1000, dtype=bool)
    tumour[:380] = True          # 380 of A's 400
    tumour[400:405] = True       # all of B
    tumour[405:415] = True       # 10 of C's 595
    return labels, tumour


def test_tvr_ignores_tiny_pure_cluster():
    """Sect. 3.2 TVR "0.95/0.05" and Fig. 2c shares on a constructed ROI; the tiny all-tumour cluster is ignored."""
    labels, tumour = _tvr_case()
    result = tumour_cluster_shares(labels, tumour)
    assert result["tvr_p"] == pytest.approx(0.95) and result["tvr_text"] == "0.95/0.05"
    assert result["tvr_cluster"] == 3
    a = result["per_cluster"][3]
    assert a["voxels"] == 400 and a["tumour_voxels"] == 380 and a["roi_share"] == pytest.approx(0.4)
    assert a["share_of_tumour"] == pytest.approx(380 / 395) and a["share_of_non_tumour"] == pytest.approx(20 / 605)
    assert sorted(result["per_cluster"]) == [1, 3, 8]
    assert sum(c["share_of_tumour"] for c in result["per_cluster"].values()) == pytest.approx(1.0)


def test_tvr_without_size_floor_picks_the_tiny_cluster():
    """Sect. 3.2 TVR: with min_share 0 the 5-voxel pure cluster wins, showing what the floor guards against."""
    labels, tumour = _tvr_case()
    result = tumour_cluster_shares(labels, tumour, min_share=0.0)
    assert result["tvr_text"] == "1.00/0.00" and result["tvr_cluster"] == 8


def test_tvr_without_tumour_and_with_unused_codebook_entries():
    """Sect. 3.2 TVR: no tumour voxels gives p = 0; n_clusters lists unused clusters with zero shares."""
    result = tumour_cluster_shares(np.array([0, 0, 2, 2]), np.zeros(4, bool), n_clusters=4)
    assert result["tvr_p"] == 0.0 and result["tvr_text"] == "0.00/1.00"
    assert sorted(result["per_cluster"]) == [0, 1, 2, 3]
    assert result["per_cluster"][1]["voxels"] == 0 and result["per_cluster"][1]["tumour_fraction"] == 0.0
    assert result["per_cluster"][2]["share_of_non_tumour"] == pytest.approx(0.5)


@pytest.mark.parametrize("call", [lambda: tumour_cluster_shares(np.array([], int), np.array([], bool)),
                                  lambda: sse(np.zeros((0, 4)), np.array([], int))])
def test_empty_input_raises(call):
    """Sect. 3.2 metrics on an empty ROI: a clear ValueError, not NaN."""
    with pytest.raises(ValueError, match="no voxels|no points"):
        call()


def test_nan_tics_are_rejected():
    """Sect. 2.1 normalisation of a flat curve gives 0/0; such TICs are refused with a hint."""
    points = np.array([[0.0, 1.0], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        sse(points, np.array([0, 1]))


def test_relabelled_perfect_clustering_has_ari_and_nmi_one():
    """Sect. 3.2 subregion agreement: cluster ids are arbitrary, a relabelled perfect clustering scores 1."""
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert subregion_agreement(np.array([5, 5, 9, 9, 1, 1]), truth) == pytest.approx({"ari": 1.0, "nmi": 1.0})
    merged = subregion_agreement(np.array([5, 5, 5, 5, 1, 1]), truth)
    # Pairs: 3 together in both, truth 3, clustering 7 of 15: ARI = (3 - 3*7/15) / ((3 + 7)/2 - 3*7/15) = 4/9.
    assert merged["ari"] == pytest.approx(4 / 9)
    # MI = ln 3 - (2/3) ln 2; NMI (arithmetic) = 2 MI / (H(truth) + H(clusters)), H(clusters) of sizes 4/6, 2/6.
    h_clusters = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert merged["nmi"] == pytest.approx(2 * (math.log(3) - 2 / 3 * math.log(2)) / (math.log(3) + h_clusters))


def _random_maps(seed, n_classes, shape=(3, 4, 5), used=None):
    rng = np.random.default_rng(seed)
    used = n_classes if used is None else used
    truth = rng.integers(0, used, shape)
    prediction = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, used, shape))
    return prediction, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_sklearn(seed):
    """Sect. 3.2 HIPM scores rest on the confusion matrix (rows truth, columns prediction), as sklearn's."""
    prediction, truth = _random_maps(seed, 5)
    expected = skm.confusion_matrix(truth.ravel(), prediction.ravel(), labels=list(range(5)))
    np.testing.assert_array_equal(confusion_matrix(prediction, truth, 5), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_accuracy_matches_balanced_accuracy(seed):
    """Sect. 3.2 HIPM mean accuracy equals balanced_accuracy_score, also when a class is only predicted."""
    prediction, truth = _random_maps(seed, 6, used=4)
    prediction.flat[0] = 5  # class 5 appears in the prediction only: no recall, left out (sklearn warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = skm.balanced_accuracy_score(truth.ravel(), prediction.ravel())
    assert mean_class_accuracy(prediction, truth, 6) == pytest.approx(expected, rel=1e-12)


def test_mean_accuracy_and_iou_hand_values():
    """Sect. 3.2 HIPM: truth [0,0,1,1], prediction [0,1,1,1]: recalls 1/2, 1 and IoUs 1/2, 2/3."""
    truth, prediction = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert mean_class_accuracy(prediction, truth, 3) == pytest.approx(0.75)
    assert mean_iou(prediction, truth, 3) == pytest.approx(7 / 12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_iou_matches_jaccard_macro(seed):
    """Sect. 3.2 HIPM mean IoU equals jaccard_score(average="macro"); classes absent from both are skipped."""
    prediction, truth = _random_maps(seed, 7, used=4)  # classes 4..6 never occur
    expected = skm.jaccard_score(truth.ravel(), prediction.ravel(), average="macro")
    assert mean_iou(prediction, truth, 7) == pytest.approx(expected, rel=1e-12)


def test_out_of_range_class_is_rejected():
    """Sect. 3.2 HIPM: a class id outside [0, n_classes) is an error, not a silently wrong matrix."""
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_report_keys_and_values():
    """Sect. 3.2 report: hand values of the two-cluster set, plus TVR and ARI when tumour and truth are given."""
    tumour = np.array([True, True, False, False, False, True])
    report = clustering_report(TWO_POINTS, TWO_LABELS, tumour=tumour, truth=TWO_LABELS + 1)
    assert report["sse"] == pytest.approx(TWO_SSE) and report["cpn"] == pytest.approx(TWO_CPN)
    assert report["spt"] == pytest.approx(TWO_SPT) and report["dbn"] == pytest.approx(TWO_DBN)
    assert report["used_clusters"] == 2 and report["tvr_text"] == "1.00/0.00" and report["tvr_cluster"] == 7
    assert report["ari"] == pytest.approx(1.0) and set(report["per_cluster"]) == {-3, 7}
    assert "ari" not in clustering_report(TWO_POINTS, TWO_LABELS)
