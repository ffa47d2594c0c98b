"""Stage evaluate@<variant>: test-set metrics, diagnostics and their figures."""
