"""mdqe.data."""
