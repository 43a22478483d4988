"""Checks for a frozen pretrained network inside another trainer's network (DKM's diffusion module, HCNet's HIPM).

A frozen network only makes sense on inputs distributed like its own training inputs, so the host dataset's channel
must be preprocessed exactly like the source dataset's channel 0: same target spacing, axis transposition, image
resampling, normalization scheme and ``use_mask_for_norm`` (and, for schemes that read them, e.g. CTNormalization, the
same dataset foreground intensity statistics; per-image schemes such as ZScoreNormalization do not).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

# Normalizations that use nothing but the image itself; any other scheme (CTNormalization, custom ones) also reads
# the dataset's foreground intensity statistics of the channel from the plans.
_PER_IMAGE_NORMALIZATIONS = frozenset({"ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                                       "RGBTo01Normalization"})


def preprocessing_facts(plans: dict, configuration: str, channel: int) -> dict[str, object]:
    """The preprocessing facts of ``plans``/``configuration`` that decide the voxels of input ``channel``."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(copy.deepcopy(plans))  # the managers may normalise the dict in place
    config = manager.get_configuration(configuration)
    scheme = config.normalization_schemes[channel]
    facts = {
        "target spacing": [float(s) for s in config.spacing],
        "transpose_forward": [int(a) for a in manager.transpose_forward],
        "normalization scheme": scheme,
        "use_mask_for_norm": bool(config.use_mask_for_norm[channel]),
        "image resampling": [config.configuration.get("resampling_fn_data"),
                             config.configuration.get("resampling_fn_data_kwargs")],
    }
    if scheme not in _PER_IMAGE_NORMALIZATIONS:
        properties = plans.get("foreground_intensity_properties_per_channel", {}).get(str(channel), {})
        facts["foreground intensity statistics"] = {k: float(v) for k, v in sorted(properties.items())}
    return facts


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        # plans store spacings as float32-derived doubles: equal to float32 precision is equal
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def preprocessing_mismatches(source_init_args: dict, plans: dict, configuration: str, channel: int = 0,
                             names: tuple[str, str] = ("pretrained", "this")) -> list[str]:
    """What a frozen network trained with ``source_init_args`` would see differently in the host's channel.

    Args:
        source_init_args: ``checkpoint["init_args"]`` of the frozen network (nnU-Net stores ``plans``,
            ``configuration`` and ``dataset_json`` in every checkpoint); its channel 0 is compared.
        plans: the host trainer's plans (``plans_manager.plans``).
        configuration: the host trainer's configuration name.
        channel: host input channel given to the frozen network.
        names: how the two sides are called in the entries.

    Returns:
        One ``"<what> <source value> (<names[0]>) vs <host value> (<names[1]>)"`` entry per difference; empty when
        they match.
    """
    source = preprocessing_facts(source_init_args["plans"], source_init_args["configuration"], 0)
    host = preprocessing_facts(plans, configuration, channel)
    return [f"{key} {source.get(key, 'none')} ({names[0]}) vs {host.get(key, 'none')} ({names[1]})"
            for key in dict.fromkeys([*source, *host]) if not _same(source.get(key), host.get(key))]


def load_pretrained_checkpoint(path: Path, owner: str, what: str, trainer_name: str, how_to_get_it: str,
                               device) -> dict:
    """The nnU-Net checkpoint of a frozen part, read at training start, with one-line errors naming ``owner`` (the
    host trainer) for a missing file (``how_to_get_it`` says how to train or name it), a file another trainer wrote,
    and a file without nnU-Net's ``init_args`` (plans and configuration: its preprocessing could not be checked)."""
    import torch

    if not Path(path).is_file():
        raise RuntimeError(f"{owner}: {what} checkpoint not found: {path} ({how_to_get_it})")
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    if checkpoint.get("trainer_name") not in (None, trainer_name):
        raise RuntimeError(f"{owner}: {path} was written by {checkpoint.get('trainer_name')}, expected {trainer_name}")
    init_args = checkpoint.get("init_args") or {}
    if "plans" not in init_args or "configuration" not in init_args:
        raise RuntimeError(f"{owner}: {path} has no init_args with plans and configuration (not written by "
                           f"nnUNetv2_train), so the {what}'s preprocessing cannot be checked")
    return checkpoint
