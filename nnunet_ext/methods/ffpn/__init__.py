"""FFPN: Fourier Feature Pyramid Network for ultrasound segmentation (Chen et al., MICCAI 2023).

- :mod:`.fourier`: elliptic Fourier descriptors in the paper's Eq. 1 parametrisation, mask <-> contour.
- :mod:`.anchors`: k-means Fourier anchors, the contour IoU (PolarIoU * BoxIoU), Eq. 2 offsets, anchor assignment.
- :mod:`.losses`: Eq. 3, Smooth L1 location and Fourier terms, contour loss, 0.25 BCE + 0.75 focal.
"""
