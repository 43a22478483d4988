"""Convert a folder of DCE-MRI NIfTI files into the DKM pair of nnU-Net raw datasets (DCE + pre-contrast only).

Input layout (one flat folder; other files such as a README are ignored)::

    SRC/CASE_pre.nii.gz     pre-contrast image x_0                       (required)
    SRC/CASE_post1.nii.gz   first post-contrast image x_1                (required)
    SRC/CASE_post2.nii.gz   ... up to x_k; every case must have the same post-contrast phases
    SRC/CASE_seg.nii.gz     tumour segmentation, values 0/1              (optional: unlabelled case)

``.nii`` works as well as ``.nii.gz``. The number of post-contrast phases k is the largest ``postK`` found; a case
without one of post1..postk is an error, as are NaNs, label values other than 0/1, unreadable files and phases or
segmentations on another voxel grid (unless ``--resample_to_pre``). See ``_dce_common`` for the two datasets written
(DKM, Lv et al., MICCAI 2023, Sec. 2-3); ``--subtraction`` appends a channel ``SUB`` = post1 - pre (float32, raw
intensities) to the DCE dataset.

Example::

    python -m datasets_conversion.dce_nifti_folder -i SRC -d 503 --pre_only_id 504 --name MyDCE --raw RAW
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import nifti_nan_count

from nnunet_ext.datasets_conversion._dce_common import (CasePlan, LoadedCase, add_common_arguments, cli_main, raw_root_from,
                                             write_paired_datasets)

CONVERTER = "datasets_conversion.dce_nifti_folder"
DEFAULT_NAME = "DCENifti"
_FILE_PATTERN = re.compile(r"^(?P<case>.+)_(?P<role>pre|post(?P<index>[1-9][0-9]*)|seg)\.nii(?:\.gz)?$")


def _is_nifti(name: str) -> bool:
    return name.endswith(".nii") or name.endswith(".nii.gz")


def find_cases(source: Path) -> tuple[dict[str, dict[str, Path]], int]:
    """Group the NIfTI files of ``source`` by case; return ``{case: {role: path}}`` and the number of post phases.

    Roles are ``pre``, ``post1``..``postk`` and ``seg``. Raises a UserInputError for an unrecognised NIfTI name, a
    file given twice (``.nii`` and ``.nii.gz``), a case lacking a phase that other cases have, or an empty folder.
    """
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    cases: dict[str, dict[str, Path]] = {}
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not _is_nifti(path.name):
            continue
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise UserInputError(f"unrecognised NIfTI file {path}: expected CASE_pre, CASE_post1, CASE_post2, ... "
                                 f"or CASE_seg (.nii/.nii.gz)")
        roles = cases.setdefault(match["case"], {})
        role = match["role"]
        if role in roles:
            raise UserInputError(f"case {match['case']}: {role} is given twice ({roles[role].name} and {path.name})")
        roles[role] = path
    if not cases:
        raise UserInputError(f"no CASE_pre/CASE_postK/CASE_seg NIfTI files in {source}")

    n_post = max((int(role[4:]) for roles in cases.values() for role in roles if role.startswith("post")), default=0)
    if n_post == 0:
        raise UserInputError(f"no post-contrast images (CASE_post1.nii.gz, ...) in {source}; DKM needs pre and post")
    for case, roles in sorted(cases.items()):
        for role in ["pre"] + [f"post{k}" for k in range(1, n_post + 1)]:
            if role not in roles:
                present = ", ".join(sorted(roles, key=_role_order))
                raise UserInputError(f"case {case}: missing phase {role} ({source / f'{case}_{role}.nii.gz'} not "
                                     f"found; the case has {present} while other cases have pre and post1..post"
                                     f"{n_post})")
    return cases, n_post


def _role_order(role: str) -> tuple[int, int]:
    if role == "pre":
        return 0, 0
    if role == "seg":
        return 2, 0
    return 1, int(role[4:])


def _read(path: Path, where: str):
    from nnunet_ext.imageio import read_sitk_image

    try:
        return read_sitk_image(path)
    except UserInputError as exc:  # the case folder first: the user finds the case, then the file
        raise UserInputError(f"{where}: {exc}") from None


def _read_image(path: Path, where: str, role: str):
    image = _read(path, where)
    n_nan = nifti_nan_count(path)
    if n_nan:
        raise UserInputError(f"{where}: {role} image {path} contains {n_nan} NaN voxel(s)")
    return image


def _loader(case: str, roles: dict[str, Path], n_post: int):
    where = f"case {case}"

    def load() -> LoadedCase:
        image_roles = ["pre"] + [f"post{k}" for k in range(1, n_post + 1)]
        images = [_read_image(roles[role], where, role) for role in image_roles]
        seg = roles.get("seg")
        return LoadedCase(images=images, image_sources=[str(roles[role]) for role in image_roles],
                          label=_read_image(seg, where, "segmentation") if seg is not None else None,
                          label_source=str(seg) if seg is not None else None)
    return load


def plan_cases(source: Path) -> tuple[list[CasePlan], int]:
    """Scan ``source`` (no pixel is read) and return one plan per case and the number of post phases."""
    cases, n_post = find_cases(source)
    plans = [CasePlan(case_id=case, labelled="seg" in roles, load=_loader(case, roles, n_post),
                      provenance={role: path.name for role, path in sorted(roles.items(),
                                                                            key=lambda kv: _role_order(kv[0]))})
             for case, roles in sorted(cases.items())]
    return plans, n_post


def convert(source: str | Path, dataset_id: int, pre_only_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, test_fraction: float = 0.3, seed: int = 0, resample_to_pre: bool = False,
            progress=None, subtraction: bool = False) -> tuple[Path, Path]:
    """Python API behind the CLI: write both datasets and return their folders (DCE, pre-contrast only)."""
    source = Path(source)
    raw_root = raw_root_from(raw)
    plans, n_post = plan_cases(source)
    return write_paired_datasets(
        plans, raw_root=raw_root, source=source, dce_id=dataset_id, pre_only_id=pre_only_id, name=name,
        n_post=n_post, test_fraction=test_fraction, seed=seed, overwrite=overwrite, resample_to_pre=resample_to_pre,
        converter=CONVERTER,
        description=f"DCE-MRI converted from the NIfTI folder {source.name}: channel 0 pre-contrast, channels "
                    f"1..{n_post} post-contrast, label 1 tumour",
        reference="see the source of the NIfTI folder", licence="see the source of the NIfTI folder",
        progress=progress, subtraction=subtraction)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_NAME)


def run(args: argparse.Namespace) -> int:
    folders = convert(args.input, args.dataset_id, args.pre_only_id, name=args.name, raw=args.raw,
                      overwrite=args.overwrite, test_fraction=args.test_fraction, seed=args.seed,
                      resample_to_pre=args.resample_to_pre, progress=print, subtraction=args.subtraction)
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
