"""Requests that arrive together are scored together: one model call per batch.

The event loop hands each request to the scoring threads (``serving.scorers``) and awaits its
future; a free thread takes everything queued (up to ``serving.batch_max``) and scores it in
one ONNX Runtime call (which releases the GIL, so the threads use as many cores). A lone
request pays one thread hand-off (tens of microseconds). Measured on the demo's int8 MiniLM,
batching saves little per item on CPU (1.36 ms alone, 1.41 ms per item in a batch of 8: the
padding eats the fixed cost it saves): throughput comes from parallel calls, and batches only
keep a burst from queueing behind single calls.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tutorloop.serving.prediction import Prediction, PredictRequest

log = logging.getLogger(__name__)

_Item = tuple[PredictRequest, asyncio.Future[Prediction], asyncio.AbstractEventLoop]
_STOP = object()


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Batcher:
    """Feeds ``score(requests) -> predictions`` from many coroutines, in batches."""

    def __init__(
        self,
        score: Callable[[Sequence[PredictRequest]], list[Prediction]],
        max_batch: int,
        threads: int = 1,
    ) -> None:
        self._score = score
        self._max = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"scorer-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def predict(self, request: PredictRequest) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.put((request, future, loop))
        return await future

    def close(self, timeout_s: float = 10.0) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Item] = [first]
            stop = False
            while len(batch) < self._max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._score_batch(batch)
            if stop:
                return

    def _score_batch(self, batch: list[_Item]) -> None:
        try:
            predictions = self._score([request for request, _, _ in batch])
        except BaseException as exc:  # every waiter learns why; the thread lives on
            for _, future, loop in batch:
                loop.call_soon_threadsafe(_resolve, future, None, exc)
            return
        for (_, future, loop), prediction in zip(batch, predictions, strict=True):
            loop.call_soon_threadsafe(_resolve, future, prediction, None)
