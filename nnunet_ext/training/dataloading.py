"""Data-loading hooks for trainers that change *which* cases nnU-Net samples, not how it crops or augments them.

nnU-Net's ``nnUNetTrainer.get_dataloaders`` builds its ``nnUNetDataLoader`` objects itself. Rather than copy that
method, :func:`substituted_data_loader` swaps the class name it calls for the duration of the call: the trainer
passes a factory, which receives exactly nnU-Net's arguments (patch sizes, label manager, transforms, oversampling)
and can build a subclass with them, or remember them to build a second loader (e.g. over an unlabeled pool) with the
same transforms.

:class:`ForegroundFirstDataLoader` keeps nnU-Net's foreground oversampling meaningful when a training split holds many
scans without foreground: nnU-Net forces the last third of each batch to be centred on a foreground voxel, but a
forced sample drawn from a scan without foreground falls back to a random crop, so the more negatives a split has,
the fewer foreground-centred patches training sees. Here a forced sample is always drawn from the cases that hold
foreground of the classes being trained; the other samples are drawn uniformly from every training case, negatives
included (so their share of random patches grows with their number, as when they are simply added to the split).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader


class ForegroundFirstDataLoader(nnUNetDataLoader):
    """nnU-Net's loader whose foreground-forced samples come from ``foreground_cases`` and are centred on one of
    ``foreground_classes`` (default: any class the preprocessing recorded locations for)."""

    def __init__(self, *args, foreground_cases: Sequence[str] = (), foreground_classes: Sequence[int] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.foreground_cases = [c for c in foreground_cases if c in set(self.indices)]
        self.foreground_classes = None if foreground_classes is None else tuple(int(c) for c in foreground_classes)
        # nnU-Net decides per batch position whether a sample is forced; the decision is needed before the case is
        # drawn (get_indices), so it is taken there and replayed when generate_train_batch asks
        self._decide_oversample = self.get_do_oversample
        self._forced: list[bool] = []
        self.get_do_oversample = self._replay_decision

    def _replay_decision(self, sample_idx: int) -> bool:
        return self._forced[sample_idx]

    def get_indices(self):
        self._forced = [bool(self._decide_oversample(j)) for j in range(self.batch_size)]
        return [np.random.choice(self.foreground_cases) if forced and self.foreground_cases
                else np.random.choice(self.indices) for forced in self._forced]

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        if force_fg and class_locations is not None and self.foreground_classes is not None:
            # centre forced samples on the trained classes only (a one-class model of a multi-class dataset)
            class_locations = {k: v for k, v in class_locations.items() if k in self.foreground_classes}
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)


@contextlib.contextmanager
def substituted_data_loader(factory: Callable[..., nnUNetDataLoader]) -> Iterator[None]:
    """While active, ``nnUNetTrainer.get_dataloaders`` builds its loaders with ``factory(*args, **kwargs)``."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    original = trainer_module.nnUNetDataLoader
    trainer_module.nnUNetDataLoader = factory
    try:
        yield
    finally:
        trainer_module.nnUNetDataLoader = original


def wrap_in_augmenter(loader: nnUNetDataLoader, pin_memory: bool, in_process: bool = False):
    """Run ``loader`` the way nnU-Net runs its training loader: in ``nnUNet_n_proc_DA`` background workers, or in
    this process when that is 0 or ``in_process`` (deterministic runs)."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    processes = 0 if in_process else get_allowed_n_proc_DA()
    if processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=processes,
                                        num_cached=max(6, processes // 2), seeds=None, pin_memory=pin_memory,
                                        wait_time=0.002)
