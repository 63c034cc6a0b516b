"""mdqe.utils."""
