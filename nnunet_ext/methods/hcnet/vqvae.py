"""TIC clustering with a VQ-VAE: HCNet's first stage (Xie et al., Sect. 2.1, Eq. 1).

Every voxel v of the region of interest gives a time-intensity curve TIC_v = {S_0, ..., S_T} (the "Volume-to-Point"
mapping: one row per voxel, one column per DCE phase). The curves are min-max normalised, encoded by an MLP to z_e,
quantised to the nearest codebook vector c_k with k = argmin_j ||z_e - c_j||_2 (the cluster index), decoded, and the
model is trained with the clustering loss of Eq. 1. The cluster index of every voxel forms the heterogeneity map.

The paper's code is not public; these are the readings chosen here (each also noted where it is implemented):

1. Normalisation scope (:func:`normalize_tics`). "To eliminate signal discrepancies among individuals" suggests one
   min/max per individual, so the default ``mode="case"`` uses a single scalar min/max over all ROI voxels and time
   points of a case; this keeps the relative enhancement between voxels (a weakly enhancing voxel stays low).
   ``mode="voxel"`` (per-curve min/max) is offered as the alternative reading; it maps every curve to [0, 1] and
   discards amplitude. A constant array / curve is mapped to zeros.
2. Eq. 1 (:func:`clustering_loss`). The printed form ``||TIC - TIC^||^2 + beta ||sg[z] - c_k||^2`` has no
   commitment term, and its text ("prevents gradient updates from affecting the codebook") contradicts the formula
   (sg[z] stops the gradient to the encoder, not to the codebook). The default reading is the standard VQ-VAE loss of
   van den Oord et al. (2017), whose commitment weight beta = 0.25 is also the paper's beta:
   ``L = ||TIC - TIC^||^2 + ||sg[z_e] - c_k||^2 + beta ||z_e - sg[c_k]||^2``;
   ``literal=True`` gives the printed form.
3. Squared norms are per-sample squared L2 norms (sum over time points or latent dims), averaged over the batch.
4. Architecture: the paper gives no widths or depth. We use an MLP encoder (Linear+ReLU per hidden width, then a
   Linear to ``latent_dim``) and the mirrored decoder with a linear output (no sigmoid: normalised curves of a case
   can sit anywhere in [0, 1] and a linear head keeps the reconstruction loss a plain least-squares fit).
5. Not in the paper, standard practice to get usable clusters: (a) a short plain-autoencoder warm-up
   (``||TIC - D(E(TIC))||^2``, no quantisation, ``warmup_epochs``) before (b) the codebook is initialised by k-means on
   the encoder outputs (the deep-embedded-clustering recipe), and (c) codes that no training point chose during an
   epoch are restarted on the encoding of a random training point (plus tiny noise). Why (a): with a random decoder
   the first VQ epochs have a large reconstruction gradient that drags all encodings into one code's cell; on the
   three-family phantom of the tests (K = 3) 1-2 of 3 codes died in epoch 2-3 and the restarted partition reached an
   ARI of only 0.56-1.0 over 12 runs, against 0.84-0.99 over 10 runs with 5 warm-up epochs.
   Optimiser: Adam with lr 5e-3 halved every 50 epochs, 300 epochs (paper Sect. 3.1); the batch size is not given
   (we use 4096).
6. Cluster ids are arbitrary in a VQ-VAE (code order). To make them stable across runs and meaningful we renumber them
   1..K by increasing early enhancement S_1 - S_0 of the clusters' mean normalised curves (low id = weak early
   enhancement), see :func:`renumber_by_early_enhancement`; the k-means reference uses the same renumbering.

Everything is seeded with local generators (``torch.Generator``, ``np.random.default_rng``) and deterministic on CPU;
the model trains on any torch device and is returned on the CPU.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

#: Points per chunk of the nearest-code search (bounds the (chunk, K) distance matrix).
NEAREST_CODE_CHUNK = 65536
#: Training points (at most) whose encodings (after the warm-up) seed the codebook by k-means.
KMEANS_INIT_MAX_POINTS = 20_000
#: Scale of the noise added to restarted codes, relative to the RMS of the encodings they are placed on.
RESTART_NOISE = 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------------------------------

def _as_curves(array: np.ndarray, name: str = "tics") -> np.ndarray:
    """Validate an (N, T) array of finite curves and return it as float64."""
    curves = np.asarray(array, dtype=np.float64)
    if curves.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N voxels, T time points), got shape {curves.shape}")
    if not np.all(np.isfinite(curves)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return curves


def normalize_tics(tics: np.ndarray, mode: str = "case") -> np.ndarray:
    """Min-max normalise time-intensity curves (Sect. 2.1).

    S^_t = (S_t - min(S)) / (max(S) - min(S)).

    Reading (module docstring, item 1): with ``mode="case"`` (default) min and max are taken over ALL values of the
    array, which the caller fills with one case's ROI voxels, so one scalar pair per case removes the inter-individual
    signal scale but keeps the relative enhancement between voxels. With ``mode="voxel"`` every row uses its own
    min/max. A constant array (case) or row (voxel) has max = min; it is mapped to zeros instead of 0/0 = NaN.

    Args:
        tics: (N, T) signal intensities, one row per voxel.
        mode: ``"case"`` or ``"voxel"``.

    Returns:
        (N, T) float32 array with values in [0, 1].

    Raises:
        ValueError: unknown ``mode``, not 2-D, or non-finite values.
    """
    if mode not in ("case", "voxel"):
        raise ValueError(f"mode must be 'case' or 'voxel', got {mode!r}")
    curves = _as_curves(tics)
    if curves.size == 0:
        return curves.astype(np.float32)
    axis = None if mode == "case" else 1
    low = curves.min(axis=axis, keepdims=True)
    span = curves.max(axis=axis, keepdims=True) - low
    # np.divide with `where` never evaluates 0/0, so no RuntimeWarning and no NaN: constant curves stay at 0.
    shifted = curves - low
    out = np.zeros_like(curves)
    np.divide(shifted, span, out=out, where=np.broadcast_to(span > 0, curves.shape))
    return out.astype(np.float32)


def early_enhancement(curves: np.ndarray) -> np.ndarray:
    """Early enhancement S_1 - S_0 of (mean) curves: the wash-in between the pre-contrast and first post phase.

    Args:
        curves: (..., T) curves with T >= 2.

    Returns:
        (...) array of S_1 - S_0.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 0 or curves.shape[-1] < 2:
        raise ValueError(f"curves need at least 2 time points, got shape {curves.shape}")
    return curves[..., 1] - curves[..., 0]


def _group_means(points: np.ndarray, labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve and size of each group 0..n_groups-1 (zeros for an empty group)."""
    counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
    sums = np.zeros((n_groups, points.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, points)
    means = np.zeros_like(sums)
    np.divide(sums, counts[:, None], out=means, where=counts[:, None] > 0)
    return means, counts


def _check_labels(labels: np.ndarray, n_points: int, low: int, high: int, name: str) -> np.ndarray:
    """Validate integer labels of length n_points with values in [low, high]; return them as int64."""
    labels = np.asarray(labels)
    if labels.shape != (n_points,):
        raise ValueError(f"{name} must have shape ({n_points},), got {labels.shape}")
    if labels.size and (labels.min() < low or labels.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def renumber_by_early_enhancement(points: np.ndarray, raw_ids: np.ndarray, n_clusters: int) -> np.ndarray:
    """Map raw cluster indices (VQ code or k-means label, 0..K-1) to ids 1..K ordered by early enhancement.

    Reading (module docstring, item 6): the U raw clusters that own at least one point are sorted by increasing
    S_1 - S_0 of their mean normalised curve and get ids 1..U (ties keep the raw index order, the sort is stable);
    the unused raw clusters get U+1..K in raw index order. Low id = weak early enhancement, independent of the
    arbitrary code order of a particular run.

    Args:
        points: (N, T) normalised curves.
        raw_ids: (N,) raw indices in 0..n_clusters-1.
        n_clusters: K.

    Returns:
        (K,) int64 array ``order`` with ``order[raw] = id``.
    """
    curves = _as_curves(points, "points")
    raw = _check_labels(raw_ids, curves.shape[0], 0, n_clusters - 1, "raw_ids")
    means, counts = _group_means(curves, raw, n_clusters)
    used = np.flatnonzero(counts > 0)
    unused = np.flatnonzero(counts == 0)
    used_sorted = used[np.argsort(early_enhancement(means[used]), kind="stable")]
    order = np.empty(n_clusters, dtype=np.int64)
    order[np.concatenate([used_sorted, unused])] = np.arange(1, n_clusters + 1)
    return order


def mean_curves(points: np.ndarray, ids: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean normalised curve of each cluster id 1..K (Fig. 2(b) of the paper).

    An empty cluster gets a row of zeros, not NaN, so that figures and downstream arithmetic never see NaN; use the
    cluster sizes (``np.bincount(ids)``) to tell an empty cluster from a flat one.

    Args:
        points: (N, T) normalised curves.
        ids: (N,) cluster ids in 1..n_clusters.
        n_clusters: K.

    Returns:
        (K, T) float64 array; row k - 1 is the mean curve of id k.
    """
    curves = _as_curves(points, "points")
    labels = _check_labels(ids, curves.shape[0], 1, n_clusters, "ids")
    return _group_means(curves, labels - 1, n_clusters)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------

def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive widths, ReLU after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nearest_code(z_e: torch.Tensor, codebook: torch.Tensor, chunk_size: int = NEAREST_CODE_CHUNK) -> torch.Tensor:
    """Cluster index k = argmin_j ||z_e - c_j||_2 (Sect. 2.1) for every row of ``z_e``.

    Uses ||z - c_j||^2 = ||z||^2 - 2 z.c_j + ||c_j||^2 and drops ||z||^2 (constant per row), so no (N, K, D) tensor
    is formed; rows are processed in chunks of ``chunk_size`` so memory is O(chunk_size * K). The distances are
    computed in float64 (float32 on MPS, which has no float64) to keep the cancellation in the expansion from flipping
    near-ties. Ties (equal computed distances, e.g. duplicated codes) go to the LOWEST code index, the documented
    behaviour of ``torch.argmin``. No gradient flows through the indices.

    Args:
        z_e: (N, D) encodings.
        codebook: (K, D) code vectors.
        chunk_size: rows per chunk (> 0).

    Returns:
        (N,) int64 tensor on the device of ``z_e``.
    """
    if z_e.ndim != 2 or codebook.ndim != 2 or z_e.shape[1] != codebook.shape[1]:
        raise ValueError(f"expected z_e (N, D) and codebook (K, D), got {tuple(z_e.shape)} and {tuple(codebook.shape)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = torch.float32 if z_e.device.type == "mps" else torch.float64
    with torch.no_grad():
        codes = codebook.detach().to(device=z_e.device, dtype=dtype)
        code_sq = (codes * codes).sum(dim=1)
        parts = [
            (code_sq - 2.0 * chunk.detach().to(dtype) @ codes.T).argmin(dim=1)
            for chunk in torch.split(z_e, chunk_size)
        ]
    if not parts:
        return torch.zeros(0, dtype=torch.long, device=z_e.device)
    return torch.cat(parts)


class TICVQVAE(nn.Module):
    """VQ-VAE over single time-intensity curves (Sect. 2.1, Fig. 1(a)).

    Encoder: Linear+ReLU per hidden width, then Linear to ``latent_dim``; codebook C = {c_1..c_K} as an
    ``nn.Embedding(n_codes, latent_dim)``; decoder: the mirrored MLP ending in a linear layer of ``n_timepoints``
    outputs. The paper gives no widths (module docstring, item 4).

    Args:
        n_timepoints: T + 1, the number of DCE phases per curve.
        n_codes: K, the number of clusters (paper: 10).
        hidden: encoder hidden widths (the decoder uses them reversed).
        latent_dim: dimension D of z_e and of the codes.
    """

    def __init__(self, n_timepoints: int, n_codes: int, hidden: Sequence[int] = (64, 64), latent_dim: int = 8):
        super().__init__()
        if n_timepoints < 1 or n_codes < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError("n_timepoints, n_codes, latent_dim and hidden widths must be positive")
        self.n_timepoints = int(n_timepoints)
        self.n_codes = int(n_codes)
        self.latent_dim = int(latent_dim)
        widths = [self.n_timepoints, *[int(h) for h in hidden], self.latent_dim]
        self.encoder = _mlp(widths)
        self.codebook = nn.Embedding(self.n_codes, self.latent_dim)
        self.decoder = _mlp(widths[::-1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e = E(TIC): (N, T) -> (N, D)."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_q = c_k with k = argmin_j ||z_e - c_j||_2, plus the straight-through copy for the decoder.

        Returns:
            ``(z_q_st, indices, z_q)``: ``z_q_st = z_e + sg[z_q - z_e]`` has the value of z_q and the gradient of
            z_e (straight-through estimator: the decoder's gradient is copied to the encoder and never reaches the
            codebook); ``indices`` (N,) int64 code indices; ``z_q`` the codebook rows, carrying the codebook gradient
            that Eq. 1's quantisation term needs.
        """
        indices = nearest_code(z_e, self.codebook.weight)
        z_q = self.codebook(indices)
        z_q_st = z_e + (z_q - z_e).detach()
        return z_q_st, indices, z_q

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """TIC^ = D(z): (N, D) -> (N, T)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode, quantise and decode; returns ``reconstruction``, ``z_e``, ``z_q`` and ``indices``."""
        z_e = self.encode(x)
        z_q_st, indices, z_q = self.quantize(z_e)
        return {"reconstruction": self.decode(z_q_st), "z_e": z_e, "z_q": z_q, "indices": indices}


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 1
# ---------------------------------------------------------------------------------------------------------------------

def _mean_squared_norm(diff: torch.Tensor) -> torch.Tensor:
    """Batch mean of per-sample squared L2 norms: (1/N) sum_n sum_i diff[n, i]^2 (module docstring, item 3)."""
    return diff.pow(2).flatten(start_dim=1).sum(dim=1).mean()


def reconstruction_term(tic: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """L_rec = ||TIC - TIC^||_2^2 (Eq. 1)."""
    return _mean_squared_norm(tic - reconstruction)


def codebook_term(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """||sg[z_e] - c_k||_2^2 (Eq. 1's L_vq): moves the codes towards the encodings, never the encoder."""
    return _mean_squared_norm(z_e.detach() - z_q)


def commitment_term(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """||z_e - sg[c_k]||_2^2 (van den Oord et al. 2017): keeps the encoder committed to its code, never moves codes."""
    return _mean_squared_norm(z_e - z_q.detach())


def clustering_loss(tic: torch.Tensor, reconstruction: torch.Tensor, z_e: torch.Tensor, z_q: torch.Tensor,
                    beta: float = 0.25, literal: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """L_Clustering of Eq. 1.

    Default (standard VQ-VAE reading, module docstring item 2)::

        L = ||TIC - TIC^||^2 + ||sg[z_e] - c_k||^2 + beta ||z_e - sg[c_k]||^2

    ``literal=True`` (the printed Eq. 1)::

        L = ||TIC - TIC^||^2 + beta ||sg[z] - c_k||^2

    In the literal form the encoder is trained only by the reconstruction term through the straight-through
    estimator. Squared norms are batch means of per-sample squared L2 norms.

    Args:
        tic: (N, T) input curves.
        reconstruction: (N, T) decoder output (computed from the straight-through z_q).
        z_e: (N, D) encoder output.
        z_q: (N, D) selected codes WITH the codebook gradient (``forward()["z_q"]``, not the straight-through copy).
        beta: paper: 0.25.
        literal: use the printed form.

    Returns:
        ``(total, terms)``; ``terms`` holds the unweighted float values ``reconstruction``, ``codebook`` and
        ``commitment`` (0.0 in literal mode, where no commitment term exists).
    """
    rec = reconstruction_term(tic, reconstruction)
    codes = codebook_term(z_e, z_q)
    if literal:
        total = rec + beta * codes
        commit_value = 0.0
    else:
        commit = commitment_term(z_e, z_q)
        total = rec + codes + beta * commit
        commit_value = float(commit.detach().item())
    terms = {"reconstruction": float(rec.detach().item()), "codebook": float(codes.detach().item()),
             "commitment": commit_value}
    return total, terms


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class VQVAEPreset:
    """Network size and optimisation schedule of :func:`fit_vqvae`.

    Attributes:
        hidden: encoder hidden widths (the paper gives none).
        latent_dim: D (the paper gives none).
        epochs: training epochs (paper: 300).
        lr: initial Adam learning rate (paper: 0.005).
        lr_halving_epochs: StepLR step, gamma 0.5 (paper: halved every 50 epochs).
        batch_size: points per step (the paper gives none).
        max_training_points: seeded subsample of the points used for training; None = all.
        warmup_epochs: plain-autoencoder epochs before the k-means codebook init (not in the paper, module
            docstring item 5; 0 disables it). They come on top of ``epochs`` and use a fresh Adam at ``lr``.
    """

    hidden: tuple[int, ...]
    latent_dim: int
    epochs: int
    lr: float
    lr_halving_epochs: int
    batch_size: int
    max_training_points: int | None
    warmup_epochs: int = 5


#: ``paper``: Sect. 3.1 schedule with our widths. ``small``: for 2-core CPUs (10x fewer epochs, halving every 10).
#: Both add the default 5 plain-autoencoder warm-up epochs (not in the paper, module docstring item 5a).
PRESETS: dict[str, VQVAEPreset] = {
    "paper": VQVAEPreset(hidden=(64, 64), latent_dim=8, epochs=300, lr=5e-3, lr_halving_epochs=50, batch_size=4096,
                         max_training_points=None),
    "small": VQVAEPreset(hidden=(32, 32), latent_dim=4, epochs=30, lr=5e-3, lr_halving_epochs=10, batch_size=4096,
                         max_training_points=100_000),
}


@dataclass
class VQVAEFit:
    """Result of :func:`fit_vqvae`.

    Attributes:
        model: the trained model, in eval mode, on the CPU.
        history: one dict per epoch: ``epoch`` (1-based), ``lr`` (used in that epoch), ``loss`` and the unweighted
            terms ``reconstruction``, ``codebook``, ``commitment`` (point-weighted epoch means), ``used_codes``
            (codes chosen by at least one training point in that epoch) and ``restarted`` (dead codes restarted
            after it).
        restarts: total number of code restarts.
        order: (K,) int64, code index -> cluster id 1..K (:func:`renumber_by_early_enhancement`).
        preset: the preset used.
    """

    model: TICVQVAE
    history: list[dict] = field(default_factory=list)
    restarts: int = 0
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    preset: VQVAEPreset | None = None


def resolve_preset(preset: VQVAEPreset | str) -> VQVAEPreset:
    """A preset by name (``PRESETS``) or the given one."""
    if isinstance(preset, VQVAEPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a VQVAEPreset")
    return PRESETS[preset]


def _subsample(n_points: int, max_points: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted seeded subsample of range(n_points) of size max_points (all indices when max_points is None/large)."""
    if max_points is None or n_points <= max_points:
        return np.arange(n_points)
    return np.sort(rng.choice(n_points, size=int(max_points), replace=False))


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_points(model: TICVQVAE, points: np.ndarray, batch_size: int = NEAREST_CODE_CHUNK) -> torch.Tensor:
    """z_e of numpy curves, without gradient, in chunks, on the model's device."""
    device = _model_device(model)
    with torch.no_grad():
        parts = [model.encode(torch.from_numpy(np.ascontiguousarray(points[i:i + batch_size], dtype=np.float32))
                              .to(device)) for i in range(0, len(points), batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, model.latent_dim), device=device)


def warmup_autoencoder(model: TICVQVAE, train_x: torch.Tensor, epochs: int, lr: float, batch_size: int,
                       generator: torch.Generator) -> None:
    """Train encoder and decoder as a plain autoencoder, min ||TIC - D(E(TIC))||^2, before quantisation.

    Not in the paper (module docstring, item 5a): it gives the decoder a meaningful map before the straight-through
    VQ phase and the k-means init a latent space that reflects the curves. Its own Adam (state discarded after).
    """
    if epochs <= 0:
        return
    optimizer = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=lr)
    for _ in range(epochs):
        permutation = torch.randperm(train_x.shape[0], generator=generator).to(train_x.device)
        for start in range(0, train_x.shape[0], batch_size):
            batch = train_x[permutation[start:start + batch_size]]
            loss = reconstruction_term(batch, model.decode(model.encode(batch)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def init_codebook_kmeans(model: TICVQVAE, points: np.ndarray, seed: int,
                         max_points: int = KMEANS_INIT_MAX_POINTS) -> None:
    """Set the codebook to k-means centres of the encodings z_e (module docstring, item 5b).

    A random codebook (N(0, 1) embedding init) mostly lies far from the initial encodings, so most codes would never
    be chosen. k-means (seeded, on a seeded subsample) places every code inside the data. When the data have fewer
    distinct encodings than codes, scikit-learn duplicates centres (and warns); the duplicates lose every tie
    (:func:`nearest_code`) and are restarted after the first epoch, so the warning is silenced here.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(seed)
    sample = points[_subsample(len(points), max_points, rng)]
    z_e = encode_points(model, sample).cpu().numpy().astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        centres = KMeans(n_clusters=model.n_codes, n_init=3, random_state=seed).fit(z_e).cluster_centers_
    with torch.no_grad():
        model.codebook.weight.copy_(torch.as_tensor(centres, dtype=model.codebook.weight.dtype))


def restart_dead_codes(model: TICVQVAE, counts: torch.Tensor, train_x: torch.Tensor, rng: np.random.Generator,
                       generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Move every code with ``counts == 0`` onto the encoding z_e of a random training point, plus tiny noise.

    Not in the paper (module docstring, item 5c): a dead code receives no gradient from Eq. 1 and would otherwise
    stay dead for the rest of training, leaving fewer than K clusters. The noise (``RESTART_NOISE`` times the RMS
    of the chosen encodings) separates codes restarted on identical points. The Adam moments of the restarted rows
    are zeroed: they only hold decayed remnants from before the code died.

    Args:
        model: the VQ-VAE being trained.
        counts: (K,) number of training points that chose each code in the last epoch.
        train_x: (N, T) training curves on the model's device.
        rng: seeded NumPy generator (picks the points).
        generator: seeded CPU torch generator (draws the noise).
        optimizer: Adam optimizer whose state rows are reset (optional).

    Returns:
        The number of restarted codes.
    """
    dead = torch.nonzero(counts.to("cpu") == 0).flatten()
    n_dead = int(dead.numel())
    if n_dead == 0:
        return 0
    rows = rng.choice(train_x.shape[0], size=n_dead, replace=n_dead > train_x.shape[0])
    weight = model.codebook.weight
    with torch.no_grad():
        z_e = model.encode(train_x[torch.as_tensor(rows, device=train_x.device)])
        scale = RESTART_NOISE * float(z_e.pow(2).mean().sqrt()) + 1e-12
        noise = torch.randn(tuple(z_e.shape), generator=generator, dtype=torch.float32).to(z_e.device) * scale
        dead_dev = dead.to(weight.device)
        weight[dead_dev] = (z_e + noise).to(weight.dtype)
        state = optimizer.state.get(weight, {}) if optimizer is not None else {}
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][dead_dev] = 0.0
    return n_dead


def _train_epoch(model: TICVQVAE, optimizer: torch.optim.Optimizer, train_x: torch.Tensor, batch_size: int,
                 generator: torch.Generator, beta: float, literal: bool) -> tuple[dict[str, float], torch.Tensor]:
    """One pass over shuffled mini-batches; returns point-weighted mean loss terms and per-code choice counts."""
    n_points = train_x.shape[0]
    permutation = torch.randperm(n_points, generator=generator).to(train_x.device)
    counts = torch.zeros(model.n_codes, dtype=torch.long, device=train_x.device)
    sums = {"loss": 0.0, "reconstruction": 0.0, "codebook": 0.0, "commitment": 0.0}
    for start in range(0, n_points, batch_size):
        batch = train_x[permutation[start:start + batch_size]]
        out = model(batch)
        total, terms = clustering_loss(batch, out["reconstruction"], out["z_e"], out["z_q"], beta, literal)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        counts += torch.bincount(out["indices"], minlength=model.n_codes)
        weight = batch.shape[0] / n_points
        sums["loss"] += float(total.detach().item()) * weight
        for key, value in terms.items():
            sums[key] += value * weight
    return sums, counts


def _build_model(n_timepoints: int, n_codes: int, preset: VQVAEPreset, seed: int) -> TICVQVAE:
    """Model with weights drawn from ``seed`` without disturbing the caller's global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TICVQVAE(n_timepoints, n_codes, hidden=preset.hidden, latent_dim=preset.latent_dim)


def fit_vqvae(points: np.ndarray, n_codes: int, preset: VQVAEPreset | str = "small", seed: int = 0,
              beta: float = 0.25, literal: bool = False, device: str | torch.device = "cpu",
              log: Callable[[str], None] | None = None) -> VQVAEFit:
    """Train the TIC-clustering VQ-VAE on normalised curves (Sect. 2.1, Eq. 1; schedule of Sect. 3.1).

    Steps: seeded subsample to ``preset.max_training_points``; model init from ``seed``; ``preset.warmup_epochs``
    of plain-autoencoder training; codebook = k-means of the encodings; Adam + StepLR(gamma 0.5) over shuffled
    mini-batches minimising :func:`clustering_loss`; after every epoch but the last, dead codes are restarted (a
    restart after the last epoch would leave a code on a single untrained point, i.e. a near-singleton cluster; dead
    codes of the last epoch stay unused and get the highest ids). Finally the training points are assigned and
    ``order`` renumbers the codes by early enhancement.

    Args:
        points: (N, T) normalised curves (:func:`normalize_tics`).
        n_codes: K (paper: 10).
        preset: a :class:`VQVAEPreset` or a name in ``PRESETS``.
        seed: seeds the subsample, weights, k-means, shuffling and restarts (local generators only).
        beta: Eq. 1 weight (paper: 0.25).
        literal: train with the printed Eq. 1 instead of the standard VQ-VAE loss.
        device: torch device for training; the returned model is on the CPU.
        log: called with one line per epoch.

    Returns:
        :class:`VQVAEFit`.
    """
    preset = resolve_preset(preset)
    curves = _as_curves(points, "points").astype(np.float32)
    rng = np.random.default_rng(seed)
    train = curves[_subsample(len(curves), preset.max_training_points, rng)]
    if n_codes < 1 or len(train) < n_codes:
        raise ValueError(f"need 1 <= n_codes <= number of training points, got {n_codes} and {len(train)}")
    generator = torch.Generator().manual_seed(seed)

    model = _build_model(curves.shape[1], n_codes, preset, seed).to(device).train()
    train_x = torch.from_numpy(train).to(device)
    warmup_autoencoder(model, train_x, preset.warmup_epochs, preset.lr, preset.batch_size, generator)
    init_codebook_kmeans(model, train, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=preset.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=preset.lr_halving_epochs, gamma=0.5)

    history: list[dict] = []
    for epoch in range(1, preset.epochs + 1):
        lr = float(optimizer.param_groups[0]["lr"])
        means, counts = _train_epoch(model, optimizer, train_x, preset.batch_size, generator, beta, literal)
        scheduler.step()
        restarted = 0
        if epoch < preset.epochs:
            restarted = restart_dead_codes(model, counts, train_x, rng, generator, optimizer)
        record = {"epoch": epoch, "lr": lr, **means, "used_codes": int((counts > 0).sum()), "restarted": restarted}
        history.append(record)
        if log is not None:
            log(f"epoch {epoch}/{preset.epochs} lr {lr:.2e} loss {means['loss']:.5f} "
                f"rec {means['reconstruction']:.5f} vq {means['codebook']:.5f} commit {means['commitment']:.5f} "
                f"used {record['used_codes']}/{n_codes} restarted {restarted}")

    model.to("cpu").eval()
    raw = nearest_code(encode_points(model, train), model.codebook.weight).numpy()
    order = renumber_by_early_enhancement(train, raw, n_codes)
    return VQVAEFit(model=model, history=history, restarts=sum(h["restarted"] for h in history), order=order,
                    preset=preset)


# ---------------------------------------------------------------------------------------------------------------------
# Assignment and the k-means reference
# ---------------------------------------------------------------------------------------------------------------------

def assign_clusters(fit_or_model: VQVAEFit | TICVQVAE, points: np.ndarray, order: np.ndarray | None = None,
                    batch_size: int = NEAREST_CODE_CHUNK) -> np.ndarray:
    """Cluster id 1..K of every curve: ``order[argmin_j ||E(TIC) - c_j||_2]`` (Sect. 2.1), without gradient.

    Args:
        fit_or_model: a :class:`VQVAEFit` or a bare :class:`TICVQVAE`.
        points: (N, T) normalised curves.
        order: (K,) code -> id map; defaults to the fit's ``order`` (required for a bare model).
        batch_size: curves per chunk.

    Returns:
        (N,) int64 ids in 1..K.
    """
    model = fit_or_model.model if isinstance(fit_or_model, VQVAEFit) else fit_or_model
    if order is None:
        if not isinstance(fit_or_model, VQVAEFit):
            raise ValueError("order is required when a bare model is given")
        order = fit_or_model.order
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (model.n_codes,):
        raise ValueError(f"order must have shape ({model.n_codes},), got {order.shape}")
    curves = _as_curves(points, "points").astype(np.float32)
    if curves.shape[1] != model.n_timepoints:
        raise ValueError(f"points have {curves.shape[1]} time points, the model expects {model.n_timepoints}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        raw = [nearest_code(encode_points(model, curves[i:i + batch_size]), model.codebook.weight).cpu().numpy()
               for i in range(0, len(curves), batch_size)]
    model.train(was_training)
    raw_ids = np.concatenate(raw) if raw else np.zeros(0, dtype=np.int64)
    return order[raw_ids]


def kmeans_clusters(points: np.ndarray, n_clusters: int, seed: int = 0, max_points: int = 200_000) -> np.ndarray:
    """k-means reference clustering of the curves (the CLI's ``--kmeans``), renumbered like the VQ-VAE path.

    scikit-learn ``KMeans(n_init=3, random_state=seed)`` is fitted on a seeded subsample of at most ``max_points``
    curves, then predicts every curve; ids 1..K come from :func:`renumber_by_early_enhancement` over all curves.

    Args:
        points: (N, T) normalised curves.
        n_clusters: K.
        seed: subsample and k-means seed.
        max_points: fitting subsample size.

    Returns:
        (N,) int64 ids in 1..K.
    """
    from sklearn.cluster import KMeans

    curves = _as_curves(points, "points")
    if n_clusters < 1 or len(curves) < n_clusters:
        raise ValueError(f"need 1 <= n_clusters <= number of points, got {n_clusters} and {len(curves)}")
    sample = curves[_subsample(len(curves), max_points, np.random.default_rng(seed))]
    model = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(sample)
    raw = model.predict(curves).astype(np.int64)
    return renumber_by_early_enhancement(curves, raw, n_clusters)[raw]
