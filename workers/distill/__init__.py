"""Distillation: distilled sets, CV-DD's recover, students."""
