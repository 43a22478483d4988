"""BHSD: multi-class intracranial hemorrhage segmentation on head CT (Wu et al., MLMI 2023), inside nnU-Net.

- :mod:`.planners`: the paper's CT window [-40, 120] HU as nnU-Net CTNormalization statistics (``BHSDPlanner``,
  ``BHSDCPUPlanner``; shim ``planners/bhsd_planners.py``).
- :mod:`.split`: bleeding, negative and unlabeled scans of a fold; the nested order negatives are added in.
- :mod:`.trainers`: ``BHSDTrainer`` (+ ``_neg200`` ... Table 2), ``BHSDSingleClassTrainer_X`` (Table 3),
  ``BHSDTrainer_UNETR`` / ``_SwinUNETR`` (Table 1), ``CPSTrainer`` / ``SupOnlyTrainer`` (Table 4).
- :mod:`.cps`: the cross pseudo supervision loss, its ramp-up and the two-network module.
- :mod:`.networks`: MONAI UNETR / Swin UNETR padded to nnU-Net's patch.
- :mod:`.merge` / :mod:`.cli`: ``nnunet-ext bhsd merge``, one-class predictions -> a multi-class map (Table 3).

Shared infrastructure used here: the false-positive metric on negative scans (:mod:`nnunet_ext.metrics.
false_positives`, reported by ``nnunet-ext evaluate`` and the benchmark harness), the foreground-first data loader
(:mod:`nnunet_ext.training.dataloading`), the ``head_ct_ich`` phantom and ``datasets_conversion/bhsd.py``.
"""
