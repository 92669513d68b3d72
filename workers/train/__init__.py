"""Training: pre-training and fine-tuning loops, member groups, schedules, seeds, one member end to end, the Ray actors."""
