"""mdqe.evaluation."""
