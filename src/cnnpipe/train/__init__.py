"""Stage train@<variant>: fitting, the self-supervised source task, curves, run environment."""
