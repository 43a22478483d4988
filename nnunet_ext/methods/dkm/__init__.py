"""DKM: Diffusion Kinetic Model for breast cancer segmentation from pre-contrast DCE-MRI (Lv et al., MICCAI 2023).

- :mod:`.diffusion`: linear DDPM schedule, Eq. 4 forward process, Eq. 6 kinetic noise target.
- :mod:`.network`: the diffusion module (DM), kinetic blocks (Eq. 5) and the segmentation module (SM).
- :mod:`.trainers`: ``DKMDiffusionTrainer`` (step 1), ``DKMTrainer`` (step 2, Eq. 7) and their variants.
- :mod:`.inference`: sliding-window post-contrast synthesis and its PSNR/SSIM.
- :mod:`.cli`: ``nnunet-ext dkm synthesize-post``.
"""
