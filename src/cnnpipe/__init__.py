"""cnnpipe: reproducible CNN image classification with DVC."""
