"""Dataset converters: one module per public dataset, each turning a source folder into nnU-Net raw datasets.

Follows nnU-Net's ``dataset_conversion`` convention (one file per dataset, source folder + dataset id in, a folder
ending with ``dataset.json`` out). Run a converter as a module from the repository root, e.g.::

    python -m nnunet_ext.datasets_conversion.breast_mri_nact_pilot -i SRC -d 501 --pre_only_id 502
    python -m nnunet_ext.datasets_conversion.dce_nifti_folder -i SRC -d 503 --pre_only_id 504

Converters:
    breast_mri_nact_pilot: TCIA Breast-MRI-NACT-Pilot (DICOM) -> DCE + pre-contrast-only datasets (DKM, Lv et al. 2023).
    dce_nifti_folder: any folder of ``CASE_pre/CASE_post1../CASE_seg`` NIfTI files -> the same pair of datasets.
    hc18: HC18 fetal-head ultrasound (PNG outlines -> filled head masks, pixel size as spacing) (FFPN).
    camus: CAMUS echocardiography, 2019 .mhd and 2023 NIfTI releases (LV cavity, myocardium, atrium) (FFPN).
    image_folder_2d: any folder of 2D images with same-stem masks.
    bhsd: BHSD head CT (official 96/96 split, negatives from the slice-level CSV, unlabeled pool) (BHSD).
    oasis_learn2reg: Learn2Reg 2021 task 3 OASIS brain MRI (35 labels, registration pairs from OASIS_dataset.json).
    registration_pairs: any folder of 3D images/labels with pairs.csv or an atlas (registration pairs in dataset.json).
    cbis_ddsm: CBIS-DDSM mammograms (TCIA DICOM or Kaggle JPEG) -> 2D mass dataset, official or seeded 75/25 split.
    inbreast: INbreast mammograms (DICOM + XML mass outlines) -> 2D mass dataset, an external test set by default.
    mama_mia: MAMA-MIA breast DCE-MRI (ISPY1/DUKE/...) -> DCE + pre-only datasets, breast masks, DUKE boxes (HCNet).
    brats2023: BraTS 2023 adult glioma (t1n/t1c [+ t2w/t2f], WT/TC/ET regions, grouped by patient) (ResFusion).
"""
