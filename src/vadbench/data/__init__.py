"""Datasets: the registry, disk checks, image listing, anomalib datamodules with held-out splits, WFDD, the demo."""
