"""mdqe.inference."""
