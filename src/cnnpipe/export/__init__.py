"""Export a trained variant for serving: a SavedModel in TF Serving's layout (encoded images
or uint8 pixels in), ONNX and LiteRT (uint8 pixels in), an export card, and parity checks
of every file against ``model.keras``.

``export@<variant>`` (stages/export.py) and ``cnnpipe export`` (:mod:`.command`) both call
:func:`cnnpipe.export.exporter.export_variant`. Nothing is imported here, so that
``cnnpipe --help`` does not pay for the exporter's modules; TensorFlow is imported only when
an export runs.
"""
