from setuptools import find_packages, setup

setup(
    name="nnunet-ext",
    version="0.1.0",
    description="nnU-Net v2 plugins: published segmentation/registration methods as nnU-Net trainers, "
                "planners, phantoms and dataset converters",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_ext", "nnunet_ext.*", "datasets_conversion"]),
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
        # DKM's diffusion module wraps MONAI's DiffusionModelUNet; also the tests' surface-distance reference
        "monai",
    ],
    extras_require={
        # MONAI is the independent reference for surface distances and DDPM schedules in the tests.
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["nnunet-ext=nnunet_ext.cli:main"]},
)
