"""Models: anomalib models built from params, local pretrained backbones, the EfficientAD teacher."""
