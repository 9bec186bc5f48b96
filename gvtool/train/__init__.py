"""Training: data, models, losses, the loop, checkpoints (torch)."""
