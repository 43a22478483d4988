"""FFPN: Fourier Feature Pyramid Network for ultrasound segmentation (Chen et al., MICCAI 2023).

- :mod:`.fourier`: elliptic Fourier descriptors in the paper's Eq. 1 parametrisation, mask <-> contour.
- :mod:`.anchors`: k-means Fourier anchors, the contour IoU (PolarIoU * BoxIoU), Eq. 2 offsets, anchor assignment.
- :mod:`.losses`: Eq. 3, Smooth L1 location and Fourier terms, contour loss, 0.25 BCE + 0.75 focal.
- :mod:`.targets`: label patches -> contour targets in network pixels, and the Eq. 3 loss of a batch.
- :mod:`.csr`: Contour Sampling Refinement (Sec. 2.2, Fig. 4): clustering rule, merged contour, RoIAlign + MLP.
- :mod:`.network`: ResNet + FPN, Fourier pyramid heads (Fig. 2c, Fig. 3), optional CSR, contours -> label-map logits.
- :mod:`.trainers`: ``FFPNTrainer`` / ``FFPNRTrainer`` (``nnUNetv2_train DATASET 2d FOLD -tr FFPNRTrainer``) and
  their ``_tiny`` CPU variants.

Elsewhere, as shared infrastructure: the HC18 converter (``datasets_conversion/hc18.py``) and the HC18 metric
(:mod:`nnunet_ext.metrics.head_circumference`, ``nnunet-ext evaluate --hc18_csv``).
Not built yet: the CAMUS and generic folder converters, HC18 prediction from a PNG folder, and the benchmarks of
issue #8.
"""
