"""Default and description of every ``cnnpipe serve`` setting, without pydantic.

:class:`~cnnpipe.serve.settings.ServeSettings` builds its fields from this table and the
command's ``--help`` reads it, so ``cnnpipe --help`` does not import pydantic.
``None`` as a default means computed when the settings are built.
"""

from __future__ import annotations

SETTINGS: dict[str, tuple[object, str]] = {
    "host": ("127.0.0.1", "address to listen on; 127.0.0.1 keeps the server local, put a "
             "reverse proxy in front for TLS and authentication (docs/serve.md)"),
    "port": (8080, "TCP port to listen on"),
    "models_dir": ("models", "folder holding one <variant>/ per trained variant"),
    "variants": ((), "variants to serve; none named serves every trained variant in "
                 "models_dir"),
    "model_version": ("1", "the version number the protocols report (TF Serving's version "
                      "folder)"),
    "batching": (True, "gather concurrent requests into one model call; off runs each "
                 "request alone"),
    "max_batch_size": (32, "most images in one model call when batching"),
    "max_latency_ms": (0.0, "longest wait, after a request arrives, for others to join its "
                       "batch; 0 batches what queued while the model was busy, so a lone "
                       "request never waits"),
    "max_body_mb": (20.0, "largest request body, in MiB; a larger one gets 413 before it is "
                    "read"),
    "max_images_per_request": (256, "most images in one request; more gets 413"),
    "intra_op_threads": (None, "threads TensorFlow uses inside one operation (default: the "
                         "cores this process may use)"),
    "inter_op_threads": (1, "operations TensorFlow runs at once; one model call at a time "
                         "needs 1"),
    "shutdown_timeout_s": (30.0, "on SIGTERM, how long requests in flight may take to "
                           "finish"),
    "log_format": ("json", "json: one JSON object a line on stderr; text: for a person "
                   "reading a terminal"),
}


def default(name: str) -> object:
    return SETTINGS[name][0]


def description(name: str) -> str:
    return SETTINGS[name][1]
