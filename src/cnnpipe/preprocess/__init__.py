"""Stage preprocess: resize, channels and normalization fitted on the training split."""
