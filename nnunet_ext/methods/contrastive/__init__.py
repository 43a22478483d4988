"""Tumour-background contrastive pre-training (Guo et al., breast DCE-MRI): synthetic triplets, Eq. 1 and 2, SimSiam."""
