from setuptools import find_packages, setup

# The repository keeps nnU-Net's plugin layout at its top level (trainers/, planners/, datasets_conversion/); the wheel
# carries those folders inside the nnunet_ext namespace, so an installed nnunet-ext (editable or not) finds its
# trainer shims at nnunet_ext.trainers and no generic top-level package name is installed.
PLUGIN_FOLDERS = {
    "nnunet_ext.trainers": "trainers",
    "nnunet_ext.planners": "planners",
    "nnunet_ext.datasets_conversion": "datasets_conversion",
}

setup(
    name="nnunet-ext",
    version="0.1.0",
    description="nnU-Net v2 plugins: published segmentation/registration methods as nnU-Net trainers, "
                "planners, phantoms and dataset converters",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_ext", "nnunet_ext.*"]) + list(PLUGIN_FOLDERS),
    package_dir=PLUGIN_FOLDERS,
    package_data={"nnunet_ext.trainers": ["README.md"]},
    install_requires=[
        "nnunetv2==2.8.1",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "batchgenerators",
        "acvl-utils",
        "SimpleITK",
        "numpy",
        "scipy",
        "scikit-image",
        "pydicom",
        "matplotlib",
        "tqdm",
        "pyyaml",
        # DKM's diffusion module wraps MONAI's DiffusionModelUNet; also the tests' surface-distance reference
        "monai",
        # the benchmark harness's SLURM executor (job arrays); its local executor runs in the tests
        "submitit",
        # Mammo-SAM's frozen encoder is segment-anything's ImageEncoderViT (weights only from a local file)
        "segment-anything==1.0",
    ],
    extras_require={
        # MONAI is the independent reference for surface distances and DDPM schedules in the tests.
        # pyefd is the independent reference for FFPN's elliptic Fourier descriptors (Eq. 1).
        # medpy is the independent reference for the region HD95 of `nnunet-ext evaluate --regions` (its hd95).
        "test": ["pytest", "pytest-xdist", "pyefd", "medpy"],
        # Benchmark-only: the ANTs SyN baseline of the registration pair benchmark (nnunet_ext.methods.dca.syn).
        # antspyx 0.6.2/0.6.3 require numpy<2.4 (a downgrade here); 0.6.1 leaves numpy alone but its metadata still
        # says scipy<1.16 (a pin for an old statsmodels, ANTsPy PR #825; ANTs itself does not use it). To keep
        # scipy, install it as: pip install statsmodels webcolors && pip install --no-deps antspyx==0.6.1
        "registration-bench": ["antspyx==0.6.1"],
    },
    entry_points={"console_scripts": ["nnunet-ext=nnunet_ext.cli:main"]},
)
