"""The ASGI application: thin routes over the served models, assembled in one place.

Middleware, outermost first: :class:`AccessLog` (a log line and metrics per request, and the
last-resort one-line 500), then :class:`BodyLimit` (413 before an oversized body is read).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cnnpipe.serve import oip, tfserving, upload
from cnnpipe.serve.errors import BodyLimit, install_error_handlers
from cnnpipe.serve.observability import AccessLog, Metrics
from cnnpipe.serve.served import ServedModels


def create_app(models: ServedModels) -> FastAPI:
    """The application serving ``models``; batchers start with it, and stop with it once
    every queued request is answered. Loading is started by the server once it listens
    (:meth:`ServedModels.start_loading`)."""
    metrics: Metrics = models.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        models.start_batchers()
        yield
        await models.stop()

    app = FastAPI(
        title="cnnpipe serve",
        summary="Image classification over the Open Inference Protocol, TF Serving's REST "
                "API and a multipart upload route",
        lifespan=lifespan,
    )
    app.state.models = models
    app.include_router(oip.router, tags=["Open Inference Protocol"])
    app.include_router(tfserving.router, tags=["TF Serving REST"])
    app.include_router(upload.router, tags=["upload"])

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_error_handlers(app, metrics.count_error)
    app.add_middleware(BodyLimit, max_bytes=models.settings.max_body_bytes,
                       count_error=metrics.count_error)
    app.add_middleware(AccessLog, metrics=metrics)
    return app
