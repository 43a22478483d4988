"""HCNet stage 1 (Sect. 2.1, Fig. 1a): cluster the time-intensity curves (TICs) of a DCE dataset into K kinetic
classes and write the heterogeneity-map dataset that the HIPM learns from (``nnunet-ext hcnet cluster``).

Steps:

1. **Volume-to-point mapping.** For every training case of the DCE dataset (``nnUNet_raw``; channel 0 pre-contrast,
   then the post-contrast phases; a ``SUB`` channel is no phase and is left out) the TIC ``{S_0..S_T}`` of each ROI
   voxel is read from the RAW images: nnU-Net's per-channel z-score would rescale every phase on its own and
   distort the curves. ROI (``--roi``): ``breast`` (a breast mask: ``<dataset>/breast_masks/<case>.nii.gz`` as the
   MAMA-MIA converter writes it, else ``extrasTr/<case>_breast.nii.gz`` as ``nnunet-ext synth breast_dce --option
   masks_in_extras=true`` writes it), ``box`` (the tumour label's bounding box grown by ``--box_margin_mm``;
   labelled cases only) or ``image``.
2. **Normalisation** (Sect. 2.1): min-max, per case over all ROI values by default (one scale per case removes the
   signal differences between individuals but keeps the enhancement differences between voxels); ``voxel`` scales
   every curve to [0, 1] on its own (shape only).
3. **Clustering**: the VQ-VAE of :mod:`nnunet_ext.methods.hcnet.vqvae` (Eq. 1), fitted on the training cases' points
   (``--kmeans``: scikit-learn KMeans instead, the reference). Cluster ids are renumbered 1..K by increasing mean
   early enhancement, so that ids mean the same across runs and K.
4. **Output** dataset ``-o MAP_ID``: ``imagesTr``/``imagesTs`` hold the pre-contrast image (the file itself,
   copied), ``labelsTr``/``labelsTs`` the heterogeneity map: 0 outside the ROI, 1..K inside (test cases are mapped
   by the model fitted on the training cases). ``clustering/`` holds the model (``vqvae.pt``), ``clustering.json``
   (settings, codes used, restarts, training history, and the metrics of :mod:`nnunet_ext.metrics.clustering` on the
   training cases' normalised ROI TICs: SSE, CPN, SPT, DBN, TVR with per-cluster shares, ARI/NMI against the
   phantom's true subregions where ``extrasTr/<case>_subregion.nii.gz`` exist) and the Fig. 2 plots
   ``cluster_curves.png`` (mean curve per cluster) and ``cluster_shares.png`` (share of tumour and non-tumour voxels
   per cluster).

Everything is checked before anything is written, and the dataset appears in one atomic step
(:mod:`nnunet_ext.atomic`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError
from nnunet_ext.jsonio import json_ready

FILE_ENDING = ".nii.gz"
ROIS = ("breast", "box", "image")
NORMALIZATIONS = ("case", "voxel")


@dataclass
class DCECase:
    identifier: str
    split: str                 # "Tr" or "Ts"
    images: list[Path]         # pre-contrast, then post-contrast phases
    label: Path | None         # tumour label (None: none on disk, or listed as unlabeled)


@dataclass
class CasePoints:
    case: DCECase
    geometry: tuple            # (spacing, origin, direction) of the pre-contrast image: the map's geometry
    roi: np.ndarray            # bool (z, y, x)
    tics: np.ndarray           # (n_roi, T) normalised
    tumour: np.ndarray | None  # (n_roi,) bool, labelled cases only
    subregion: np.ndarray | None  # (n_roi,) int, phantom truth where available


def raw_dataset_folder(dataset: str | int) -> Path:
    """``$nnUNet_raw/DatasetXXX_Name`` for an id or a folder name, or a dataset folder's path (one-line errors)."""
    if os.sep in str(dataset) and Path(dataset).is_dir():
        return Path(dataset)
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise UserInputError("nnUNet_raw is not set: run eval \"$(nnunet-ext env)\" first")
    text = str(dataset)
    if text.isdigit():
        from nnunet_ext.synth.base import existing_dataset_with_id

        found = existing_dataset_with_id(Path(raw), int(text))
        if found is None:
            raise UserInputError(f"dataset {text} not found in {raw}")
        return found
    folder = Path(raw) / text
    if not folder.is_dir():
        raise UserInputError(f"dataset {text} not found in {raw}")
    return folder


def read_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    if not path.is_file():
        raise UserInputError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc})") from None


def find_cases(folder: Path, meta: dict) -> list[DCECase]:
    """Training and test cases with all their phases (every channel but a ``SUB`` one); a missing phase is an error
    naming the case and file."""
    from nnunet_ext.datasets_conversion._dce_common import phase_channels

    names = meta.get("channel_names", {})
    phases = phase_channels(names)
    if len(phases) < 2:
        besides = " besides SUB" if len(phases) < len(names) else ""
        raise UserInputError(f"{folder.name} has {len(phases)} channel(s){besides}: TIC clustering needs a DCE "
                             "dataset with a pre-contrast and at least one post-contrast phase (2 time points or "
                             "more)")
    unlabeled = set(meta.get("unlabeled_cases", []))
    cases = []
    for split in ("Tr", "Ts"):
        images = folder / f"images{split}"
        if not images.is_dir():
            continue
        identifiers = sorted({p.name[:-len(FILE_ENDING) - 5] for p in images.glob(f"*_0000{FILE_ENDING}")})
        for identifier in identifiers:
            files = [images / f"{identifier}_{c:04d}{FILE_ENDING}" for c in phases]
            for f in files:
                if not f.is_file():
                    raise UserInputError(f"case {identifier}: missing phase {f} (dataset.json names {len(names)} "
                                         "channels)")
            label = folder / f"labels{split}" / f"{identifier}{FILE_ENDING}"
            has_label = label.is_file() and identifier not in unlabeled
            cases.append(DCECase(identifier, split, files, label if has_label else None))
    if not any(c.split == "Tr" for c in cases):
        raise UserInputError(f"{folder / 'imagesTr'} holds no cases (<case>_0000{FILE_ENDING})")
    return cases


def _checked(image, reference, case: str, what: str, path: Path):
    from nnunet_ext.geometry import geometry_mismatch

    problem = geometry_mismatch(reference, image)
    if problem:
        raise UserInputError(f"case {case}: {what} {path} is not on the pre-contrast grid ({problem})")
    return image


def _roi_file(folder: Path, case: DCECase) -> Path | None:
    for path in (folder / "breast_masks" / f"{case.identifier}{FILE_ENDING}",
                 folder / f"extras{case.split}" / f"{case.identifier}_breast{FILE_ENDING}"):
        if path.is_file():
            return path
    return None


def _box(label: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    box = np.zeros(label.shape, bool)
    where = np.nonzero(label)
    slices = []
    for axis, s in enumerate(spacing):
        grow = int(np.ceil(margin_mm / s))
        slices.append(slice(max(int(where[axis].min()) - grow, 0), int(where[axis].max()) + grow + 1))
    box[tuple(slices)] = True
    return box


def case_points(folder: Path, case: DCECase, roi: str, normalization: str, box_margin_mm: float) -> CasePoints:
    """Read one case's phases, ROI, tumour label and (phantoms) subregions; return its normalised ROI TICs."""
    import SimpleITK as sitk

    from nnunet_ext.imageio import nifti_nan_count, read_sitk_image
    from nnunet_ext.methods.hcnet.vqvae import normalize_tics

    pre = read_sitk_image(case.images[0])
    phases = [pre] + [_checked(read_sitk_image(p), pre, case.identifier, "phase", p) for p in case.images[1:]]
    volume = np.stack([sitk.GetArrayFromImage(p).astype(np.float32) for p in phases], axis=-1)
    for path in case.images:  # SimpleITK reads a NIfTI NaN as 0: count them in the file
        if not np.isfinite(volume).all() or nifti_nan_count(path):
            raise UserInputError(f"case {case.identifier}: NaN or infinite values in its phases ({path})")
    label = None
    if case.label is not None:
        label = sitk.GetArrayFromImage(_checked(read_sitk_image(case.label), pre, case.identifier, "label",
                                                case.label)) > 0
    if roi == "image":
        mask = np.ones(volume.shape[:-1], bool)
    elif roi == "box":
        if label is None or not label.any():
            raise UserInputError(f"case {case.identifier}: --roi box needs a tumour label, and the case has "
                                 f"{'an empty one' if label is not None else 'none'}")
        mask = _box(label, tuple(reversed(pre.GetSpacing())), box_margin_mm)
    else:
        path = _roi_file(folder, case)
        if path is None:
            raise UserInputError(f"case {case.identifier}: no breast mask ({folder / 'breast_masks'}/"
                                 f"{case.identifier}{FILE_ENDING} or extras{case.split}/{case.identifier}_breast"
                                 f"{FILE_ENDING}); use --roi box or --roi image")
        mask = sitk.GetArrayFromImage(_checked(read_sitk_image(path), pre, case.identifier, "breast mask", path)) > 0
    if not mask.any():
        raise UserInputError(f"case {case.identifier}: empty ROI (--roi {roi})")
    subregion = None
    truth = folder / f"extras{case.split}" / f"{case.identifier}_subregion{FILE_ENDING}"
    if truth.is_file():
        subregion = sitk.GetArrayFromImage(read_sitk_image(truth))[mask].astype(np.int64)
    geometry = (pre.GetSpacing(), pre.GetOrigin(), pre.GetDirection())
    return CasePoints(case, geometry, mask, normalize_tics(volume[mask], normalization),
                      label[mask] if label is not None else None, subregion)


def _plot(curves: np.ndarray, shares: dict, path_curves: Path, path_shares: Path, method: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = curves.shape[0]
    colours = plt.cm.viridis(np.linspace(0, 1, k))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i in range(k):
        ax.plot(range(curves.shape[1]), curves[i], color=colours[i], marker="o", label=f"{i + 1}")
    ax.set(xlabel="phase (0 = pre-contrast)", ylabel="normalised intensity", title=f"cluster mean TICs ({method})")
    ax.legend(title="cluster", fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path_curves, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ids = np.arange(1, k + 1)
    per_cluster = shares.get("per_cluster", {})
    tumour = [per_cluster.get(i, {}).get("share_of_tumour", 0.0) for i in ids]
    other = [per_cluster.get(i, {}).get("share_of_non_tumour", 0.0) for i in ids]
    ax.bar(ids - 0.2, tumour, 0.4, label="tumour")
    ax.bar(ids + 0.2, other, 0.4, label="non-tumour")
    ax.set(xlabel="cluster", ylabel="share of voxels", xticks=ids, title="voxel share per cluster")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_shares, dpi=100)
    plt.close(fig)


def cluster_dataset(dce: str | int, map_id: int, n_clusters: int = 10, preset: str = "paper", roi: str = "breast",
                    normalization: str = "case", kmeans: bool = False, literal: bool = False, seed: int = 0,
                    overwrite: bool = False, name: str | None = None, device: str = "cpu",
                    box_margin_mm: float = 10.0, raw: str | None = None, log=print) -> Path:
    """Python API of ``nnunet-ext hcnet cluster`` (module docstring); returns the written map dataset folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.metrics.clustering import clustering_report
    from nnunet_ext.synth.base import dataset_folder_name, existing_dataset_with_id
    from nnunet_ext.methods.hcnet import vqvae

    if n_clusters < 2:
        raise UserInputError(f"-K must be >= 2 (clusters), got {n_clusters}")
    if roi not in ROIS:
        raise UserInputError(f"--roi must be one of {', '.join(ROIS)}, got {roi!r}")
    if normalization not in NORMALIZATIONS:
        raise UserInputError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    if preset not in vqvae.PRESETS:
        raise UserInputError(f"--preset must be one of {', '.join(vqvae.PRESETS)}, got {preset!r}")
    if not 1 <= int(map_id) <= 999:
        raise UserInputError(f"-o must be a dataset id in 1..999, got {map_id}")
    if device not in ("cpu", "cuda", "mps"):
        raise UserInputError(f"-device must be cpu, cuda or mps, got {device!r}")
    folder = raw_dataset_folder(dce)
    meta = read_dataset_json(folder)
    raw_root = Path(raw) if raw else folder.parent
    name = name or f"{folder.name.split('_', 1)[1]}HCNetMapK{n_clusters}"
    output = raw_root / dataset_folder_name(int(map_id), name)
    clash = existing_dataset_with_id(raw_root, int(map_id))
    if clash is not None and clash.resolve() == folder.resolve():
        raise UserInputError(f"-o {map_id} is the DCE dataset itself; choose another id")
    if clash is not None and not overwrite:
        raise UserInputError(f"dataset id {map_id} already exists at {clash} (pass --overwrite to replace it)")
    cases = find_cases(folder, meta)
    points = [case_points(folder, c, roi, normalization, box_margin_mm) for c in cases]
    train = [p for p in points if p.case.split == "Tr"]
    train_tics = np.concatenate([p.tics for p in train])
    log(f"hcnet cluster: {len(train)} training cases, {len(train_tics)} ROI voxels, T = {train_tics.shape[1]}, "
        f"K = {n_clusters}, {'KMeans' if kmeans else 'VQ-VAE ' + preset}")

    fit = None
    if kmeans:
        train_ids = vqvae.kmeans_clusters(train_tics, n_clusters, seed=seed)
        centres = vqvae.mean_curves(train_tics, train_ids, n_clusters)

        def assign(tics: np.ndarray) -> np.ndarray:  # nearest cluster mean: the KMeans rule for new cases
            import torch
            return vqvae.nearest_code(torch.from_numpy(tics), torch.from_numpy(centres)).numpy() + 1
    else:
        fit = vqvae.fit_vqvae(train_tics, n_clusters, preset=preset, seed=seed, literal=literal, device=device,
                              log=log)

        def assign(tics: np.ndarray) -> np.ndarray:
            return vqvae.assign_clusters(fit, tics, fit.order)
        train_ids = assign(train_tics)
    per_case = iter(np.split(train_ids, np.cumsum([len(p.tics) for p in train])[:-1]))
    ids = [next(per_case) if p.case.split == "Tr" else assign(p.tics) for p in points]

    tumour = None  # TVR: over the labelled training cases' ROI voxels
    labelled = [p.tumour is not None for p in train]
    if any(labelled):
        tumour = np.concatenate([p.tumour for p in train if p.tumour is not None])
    truth_cases = [(i, p) for i, p in zip(ids, points) if p.case.split == "Tr" and p.subregion is not None]
    truth_ids = truth = None
    if truth_cases:
        inside = [p.subregion > 0 for _, p in truth_cases]
        truth_ids = np.concatenate([i[m] for (i, _), m in zip(truth_cases, inside)])
        truth = np.concatenate([p.subregion[m] for (_, p), m in zip(truth_cases, inside)])
    in_labelled = np.concatenate([np.full(len(p.tics), has) for p, has in zip(train, labelled)])
    report = clustering_report(train_tics, train_ids)
    if tumour is not None:
        from nnunet_ext.metrics.clustering import tumour_cluster_shares
        report.update(tumour_cluster_shares(train_ids[in_labelled], tumour))
    if truth is not None and truth.size:
        from nnunet_ext.metrics.clustering import subregion_agreement
        report.update(subregion_agreement(truth_ids, truth))
    curves = vqvae.mean_curves(train_tics, train_ids, n_clusters)

    labels = {"background": 0, **{f"cluster_{k}": k for k in range(1, n_clusters + 1)}}
    record = {"source_dataset": folder.name, "n_clusters": n_clusters, "method": "kmeans" if kmeans else "vqvae",
              "preset": None if kmeans else preset, "literal_eq1": bool(literal), "roi": roi,
              "normalization": normalization, "seed": seed, "box_margin_mm": box_margin_mm if roi == "box" else None,
              "time_points": int(train_tics.shape[1]), "training_cases": len(train),
              "training_voxels": int(len(train_tics))}
    # metrics at the top level: the benchmark harness reads a JSON file's numeric top-level keys
    summary = {**record, **report, "mean_curves": curves.tolist()}
    if fit is not None:
        summary.update(restarts=fit.restarts, code_order=np.asarray(fit.order).tolist(), history=fit.history)
    with atomic_output_dir(output, overwrite=overwrite, inputs=[folder], written_by="nnunet-ext hcnet cluster",
                           retire=[clash] if clash is not None and clash != output else []) as tmp:
        _write_map_dataset(tmp, points, ids, meta, labels, record)
        (tmp / "clustering").mkdir()
        (tmp / "clustering" / "clustering.json").write_text(json.dumps(json_ready(summary), indent=2))
        if fit is not None:
            import torch
            torch.save({"state_dict": fit.model.state_dict(), "order": np.asarray(fit.order).tolist(),
                        "n_timepoints": int(train_tics.shape[1]), "n_codes": n_clusters, "preset": preset},
                       tmp / "clustering" / "vqvae.pt")
        _plot(curves, report, tmp / "clustering" / "cluster_curves.png", tmp / "clustering" / "cluster_shares.png",
              record["method"])
    log(f"wrote {output} ({summary['used_clusters']} of {n_clusters} clusters used)")
    return output


def _write_map_dataset(tmp: Path, points: list[CasePoints], ids: list[np.ndarray], meta: dict, labels: dict,
                       record: dict) -> None:
    import SimpleITK as sitk

    for split in sorted({p.case.split for p in points}):
        (tmp / f"images{split}").mkdir()
        (tmp / f"labels{split}").mkdir()
    for p, cluster_ids in zip(points, ids):
        case = p.case
        shutil.copyfile(case.images[0], tmp / f"images{case.split}" / f"{case.identifier}_0000{FILE_ENDING}")
        heterogeneity = np.zeros(p.roi.shape, np.uint8)
        heterogeneity[p.roi] = cluster_ids
        image = sitk.GetImageFromArray(heterogeneity)
        spacing, origin, direction = p.geometry
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        sitk.WriteImage(image, str(tmp / f"labels{case.split}" / f"{case.identifier}{FILE_ENDING}"),
                        useCompression=True)
    dataset_json = {
        "channel_names": {"0": meta["channel_names"]["0"]},
        "labels": labels,
        "numTraining": sum(p.case.split == "Tr" for p in points),
        "file_ending": FILE_ENDING,
        "name": "HCNet heterogeneity maps",
        "description": "labels are HCNet TIC clusters (0 outside the ROI, 1..K by increasing early enhancement) "
                       "written by nnunet-ext hcnet cluster; images are the pre-contrast phase",
        "hcnet_clustering": record,
    }
    (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
