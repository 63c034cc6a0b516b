"""mdqe.layers."""
