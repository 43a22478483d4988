"""Segmentation metrics (Dice, IoU, PPV, SEN, HD95, ASD) and the ``nnunet-ext evaluate`` folder evaluation."""
from nnunet_ext.metrics.segmentation import (METRIC_NAMES, average_symmetric_surface_distance, binary_metrics,
                                             compute_case_metrics, confusion_counts, dice, distance_undefined,
                                             hd95, image_diagonal_mm, jaccard, precision, sensitivity,
                                             surface_distances, surface_voxels)

__all__ = ["METRIC_NAMES", "average_symmetric_surface_distance", "binary_metrics", "compute_case_metrics",
           "confusion_counts", "dice", "distance_undefined", "hd95", "image_diagonal_mm", "jaccard", "precision",
           "sensitivity", "surface_distances", "surface_voxels"]
