"""vadbench: a reproducible benchmark for visual anomaly detection built on anomalib."""

from vadbench import quiet

__version__ = "0.1.0"

quiet.hide_third_party_deprecations()  # before any third-party package is imported through vadbench
