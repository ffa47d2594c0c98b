"""Server-side micro-batching: concurrent requests share one model call.

A model call on a small CNN costs about the same for one image as for thirty-two, so under
load the server gathers the requests that arrive close together and runs them as one batch:

- each request (an (n, H, W, C) uint8 array) waits in the model's queue;
- the worker takes the first one, then keeps gathering until the batch holds
  ``max_batch_size`` images or ``max_latency_s`` have passed since that first request
  arrived (a request that would overflow the batch opens the next one, whole);
- the batch runs in the one inference thread shared by every model, so TensorFlow's
  intra-op threads are the only parallelism and the cores are not oversubscribed;
- each request's future gets its own rows back.

While a batch runs, the next one gathers; a request that already waited its latency budget
in the queue does not wait again. ``max_batch_size`` 1 is batching off: every request runs
alone. :meth:`MicroBatcher.drain` (SIGTERM) stops the waiting, so queued requests run at
once; :meth:`MicroBatcher.stop` ends the worker after every queued request is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Request:
    images: np.ndarray
    arrived: float
    answer: asyncio.Future = field(repr=False)


_FLUSH = object()  # wakes a gathering worker so that it stops waiting (drain)
_STOP = object()  # ends the worker once everything queued before it has run


class MicroBatcher:
    """One model's queue and the worker that turns it into batches."""

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_latency_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue = asyncio.Queue()
        self._held: _Request | None = None  # the request that did not fit the last batch
        self._draining = False
        self._worker: asyncio.Task | None = None
        self.queued_images = 0  # waiting for a model call: the metrics' queue depth

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's rows for ``images``, computed within some batch."""
        loop = asyncio.get_running_loop()
        request = _Request(images, loop.time(), loop.create_future())
        self._queue.put_nowait(request)
        self.queued_images += len(images)
        return await request.answer

    def drain(self) -> None:
        """Run what is queued without waiting for more (the server is shutting down)."""
        self._draining = True
        self._queue.put_nowait(_FLUSH)

    async def stop(self) -> None:
        """Answer every queued request, then end the worker."""
        self.drain()
        self._queue.put_nowait(_STOP)
        if self._worker is not None:
            await self._worker

    async def _work(self) -> None:
        while True:
            first = self._held or await self._queue.get()
            self._held = None
            if first is _STOP:
                return
            if first is _FLUSH:
                continue
            batch = await self._gather(first)
            await self._run(batch)

    async def _gather(self, first: _Request) -> list[_Request]:
        batch, size = [first], len(first.images)
        deadline = first.arrived + self.max_latency_s
        loop = asyncio.get_running_loop()
        while size < self.max_batch_size:
            item = await self._next(deadline - loop.time())
            if item is None or item is _FLUSH:
                break
            if item is _STOP or size + len(item.images) > self.max_batch_size:
                self._held = item
                break
            batch.append(item)
            size += len(item.images)
        return batch

    async def _next(self, wait_s: float):
        """The next queued item: at once if there is one, else within ``wait_s``; None when
        none comes in time."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if wait_s <= 0 or self._draining:
            return None
        try:
            async with asyncio.timeout(wait_s):
                return await self._queue.get()  # a cancelled get leaves its item queued
        except TimeoutError:
            return None

    async def _run(self, batch: list[_Request]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate(
            [request.images for request in batch])
        self.queued_images -= len(images)
        self._on_batch(len(images))
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(self._executor, self._run_batch, images)
        except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it
            for request in batch:
                if not request.answer.done():
                    request.answer.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.images)
            if not request.answer.done():  # its client may have gone
                request.answer.set_result(rows[start:end])
            start = end
