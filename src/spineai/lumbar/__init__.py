"""Lumbar spine MR: disc-level localisation and degeneration grading."""
