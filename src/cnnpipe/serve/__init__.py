"""``cnnpipe serve``: trained variants over HTTP (docs/serve.md).

FastAPI on uvicorn. The Open Inference Protocol (:mod:`~cnnpipe.serve.oip`), TF Serving's
REST API (:mod:`~cnnpipe.serve.tfserving`) and a multipart upload route
(:mod:`~cnnpipe.serve.upload`) are thin routes over :class:`~cnnpipe.serve.served.ServedModels`,
whose micro-batchers (:mod:`~cnnpipe.serve.batcher`) gather concurrent requests into one
model call in a single inference thread. Importing this package loads neither FastAPI nor
TensorFlow: ``cnnpipe --help`` stays fast.
"""

from cnnpipe.serve.command import add_serve_parser

__all__ = ["add_serve_parser"]
