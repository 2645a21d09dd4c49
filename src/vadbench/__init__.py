"""vadbench: a reproducible benchmark for visual anomaly detection built on anomalib."""

__version__ = "0.1.0"
