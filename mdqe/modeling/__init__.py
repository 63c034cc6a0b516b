"""mdqe.modeling."""
