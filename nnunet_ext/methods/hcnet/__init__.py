"""HCNet (Xie et al.): TIC clustering, heterogeneity prediction (HIPM) and kinetic-integration segmentation."""
