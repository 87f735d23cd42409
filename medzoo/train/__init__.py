"""Training: losses, metrics, the Trainer, checkpoints, logging and distributed helpers."""
