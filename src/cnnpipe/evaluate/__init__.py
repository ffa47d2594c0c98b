"""Stage evaluate@<variant>: test-set metrics, inference, diagnostics and their figures."""
