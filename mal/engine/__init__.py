"""Labeler training engine: box-crop data, schedule + EMA, training loop, validation."""
