"""Dataset sources and splitting."""
