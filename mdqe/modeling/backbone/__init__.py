"""mdqe.modeling.backbone."""
