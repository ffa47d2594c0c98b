"""Stage preprocess: the model-input size, channels and normalization, statistics from train."""
