"""The served variants: their cards at once, their models loaded behind the listening server.

Start-up order, so that a probe always gets an answer and TensorFlow never oversubscribes:

1. before anything listens, each variant's card is read (no TensorFlow): an unknown variant
   or a bad card is refused in one line, and model metadata can be answered from the card;
2. the server listens: ``/v2/health/live`` answers 200, readiness 503;
3. in the one inference thread, TensorFlow is imported and its thread counts pinned (they
   cannot change once TensorFlow has run an operation), then each model loads and runs one
   warm-up batch (which traces its graph), and only then turns ready.

All model calls, warm-up included, run in that single thread: TensorFlow's intra-op threads
are the parallelism. Decoding runs in a separate pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import CnnpipeError, ConfigError
from cnnpipe.core.model_card import ModelCard
from cnnpipe.inference import InputSpec, TrainedVariant
from cnnpipe.serve.batcher import MicroBatcher
from cnnpipe.serve.errors import ApiError, one_line
from cnnpipe.serve.observability import Metrics
from cnnpipe.serve.settings import ServeSettings

log = logging.getLogger("cnnpipe.serve")


@dataclass
class ServedModel:
    """One variant: its card from the start; its model and batcher once loaded."""

    name: str
    folder: Path
    card: ModelCard
    trained: TrainedVariant | None = None
    batcher: MicroBatcher | None = field(default=None, repr=False)
    ready: bool = False

    @property
    def spec(self) -> InputSpec:
        return InputSpec.from_card(self.card)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.card.class_names

    async def classify(self, images: np.ndarray) -> np.ndarray:
        """(n, classes) float64 probabilities for an (n, H, W, C) uint8 batch."""
        if not self.ready:
            raise ApiError(503, f"model {self.name} is still loading; retry when "
                           f"/v2/models/{self.name}/ready answers 200", "not_ready")
        return await self.batcher.predict(images)


def resolve_variants(settings: ServeSettings) -> list[ServedModel]:
    """The variants to serve with their cards, or a one-line ConfigError, before TensorFlow."""
    from cnnpipe.predict import available_variants, variant_folder

    names = settings.variants or tuple(available_variants(settings.models_dir))
    if not names:
        raise ConfigError(f"no trained variants under {settings.models_dir}/ (run `dvc repro`, "
                          "or pass --models-dir)")
    if len(set(names)) != len(names):
        raise ConfigError(f"a variant is named twice: {' '.join(names)}")
    served = []
    for name in names:
        folder = variant_folder(settings.models_dir, name)
        served.append(ServedModel(name=name, folder=folder,
                                  card=ModelCard.read(folder / "model_card.json")))
    return served


class ServedModels:
    """Every served variant by name, the inference thread and the decoding pool."""

    def __init__(self, settings: ServeSettings, models: list[ServedModel], metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.by_name = {model.name: model for model in models}
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.decoding = ThreadPoolExecutor(max(2, settings.intra_op_threads),
                                           thread_name_prefix="decode")
        self.failure: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, name: str) -> ServedModel:
        model = self.by_name.get(name)
        if model is None:
            raise ApiError(404, f"no model {name!r} here; this server serves "
                           f"{', '.join(self.by_name)}", "unknown_model")
        return model

    @property
    def ready(self) -> bool:
        return all(model.ready for model in self.by_name.values())

    async def run_in_pool(self, function, *args):
        """``function(*args)`` in the decoding pool, so the event loop keeps answering."""
        return await asyncio.get_running_loop().run_in_executor(self.decoding, function, *args)

    def start_batchers(self) -> None:
        """On the event loop, before the server listens: one batcher per model."""
        self._loop = asyncio.get_running_loop()
        for model in self.by_name.values():
            self.metrics.ready.labels(model=model.name).set(0)
            model.batcher = MicroBatcher(
                self._model_call(model), self.inference, self.settings.effective_batch_size,
                self.settings.max_latency_ms / 1000,
                on_batch=self.metrics.batch_size.labels(model=model.name).observe)
            self.metrics.queued.labels(model=model.name).set_function(
                lambda batcher=model.batcher: batcher.queued_images)
            model.batcher.start()

    def _model_call(self, model: ServedModel):
        seconds = self.metrics.inference.labels(model=model.name)

        def call(images: np.ndarray) -> np.ndarray:
            with seconds.time():
                return model.trained.predict_batch(images)

        return call

    def start_loading(self, on_failure) -> None:
        """Load and warm every model in the inference thread; ``on_failure(message)`` runs on
        the event loop if one cannot be loaded."""
        loop = self._loop

        def load_all() -> None:
            try:
                self._pin_tensorflow_threads()
                for model in self.by_name.values():
                    trained = self._load_and_warm(model)
                    loop.call_soon_threadsafe(self._mark_ready, model, trained)
            except CnnpipeError as exc:
                loop.call_soon_threadsafe(on_failure, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported in one line, then exit
                loop.call_soon_threadsafe(on_failure, f"{type(exc).__name__}: {one_line(exc)}")

        self.inference.submit(load_all)

    def _pin_tensorflow_threads(self) -> None:
        from cnnpipe.core.runner import quiet_native_logs

        # TensorFlow's native noise at import and device discovery ("no GPU here") held back
        with quiet_native_logs():
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(self.settings.intra_op_threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.settings.inter_op_threads)
            tf.config.list_physical_devices()
        log.info("tensorflow pinned to %d intra-op and %d inter-op threads",
                 self.settings.intra_op_threads, self.settings.inter_op_threads)

    def _load_and_warm(self, model: ServedModel) -> TrainedVariant:
        trained = TrainedVariant.load(model.folder)
        warm_up = np.zeros((self.settings.effective_batch_size, *model.spec.shape), np.uint8)
        trained.predict_batch(warm_up)  # traces the graph: the first request does not pay it
        return trained

    def _mark_ready(self, model: ServedModel, trained: TrainedVariant) -> None:
        model.trained = trained
        # TensorFlow and Keras leave millions of long-lived objects; frozen, the collector's
        # full passes no longer walk them while requests wait.
        gc.freeze()
        model.ready = True
        self.metrics.ready.labels(model=model.name).set(1)
        log.info("model %s ready (%s)", model.name, model.folder)

    def drain(self) -> None:
        """From a signal handler: run what is queued without waiting to fill batches."""
        if self._loop is not None:
            for model in self.by_name.values():
                if model.batcher is not None:
                    self._loop.call_soon_threadsafe(model.batcher.drain)

    async def stop(self) -> None:
        """Answer everything queued, then release the threads."""
        for model in self.by_name.values():
            if model.batcher is not None:
                await model.batcher.stop()
        self.decoding.shutdown(wait=False, cancel_futures=True)
        self.inference.shutdown(wait=False, cancel_futures=True)


def served_models(request) -> ServedModels:
    """The models the application serves (``create_app`` puts them on its state)."""
    return request.app.state.models


def requested_model(request, name: str, model_version: str | None,
                    unknown_version: str) -> ServedModel:
    """Model ``name`` (404 when not served) at ``model_version`` (any when None; 404 with the
    protocol's own ``unknown_version`` message when it is not the served one), named on the
    request for the access log."""
    models = served_models(request)
    model = models.get(name)
    if model_version is not None and model_version != models.settings.model_version:
        raise ApiError(404, unknown_version, "unknown_model")
    request.state.model = name
    return model
