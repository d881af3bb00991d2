"""Training: loops, schedules, checkpoints."""
