"""Dynamic batching for the HTTP server: concurrent requests gathered into one forward pass.

Each request hands its texts to :meth:`DynamicBatcher.submit` and awaits its rows of
probabilities. One worker task takes the oldest waiting request, then keeps adding waiting
requests until the batch holds ``max_batch_size`` texts or ``max_wait_ms`` have passed since it
started gathering, and runs the whole batch in one call of ``predict`` on a single model thread
(so the event loop keeps accepting requests meanwhile). ``predict`` is the classifier's
``predict_proba``: it tokenizes the batch once and sorts it by length, so gathered requests share
padding-efficient forward passes. A request is never split; one larger than ``max_batch_size``
runs alone. With batching off, every request is its own forward pass, in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

Predict = Callable[[list[str], Optional[list[str]]], np.ndarray]


@dataclass
class _Request:
    texts: list[str]
    pairs: Optional[list[str]]
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Gathers concurrent requests into batches for one model thread.

    Args:
        predict: ``predict(texts, pairs) -> probabilities`` (one row per text, in order); runs on the model thread.
        max_batch_size: most texts per forward pass (a single larger request still runs, alone).
        max_wait_ms: how long the first request of a batch may wait for others to join.
        enabled: False runs every request on its own (the baseline dynamic batching is measured against).
    """

    def __init__(self, predict: Predict, max_batch_size: int = 64, max_wait_ms: float = 5.0, enabled: bool = True):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.enabled = enabled
        self.batches = 0  # forward calls so far, for /info and tests
        self._waiting: collections.deque[_Request] = collections.deque()
        self._arrived: Optional[asyncio.Event] = None
        self._stopping = False
        self._worker: Optional[asyncio.Task] = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp-transfer-model")

    async def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish every request already submitted, then stop the worker and the model thread."""
        self._stopping = True
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is not None:
            await self._worker
        self._thread.shutdown(wait=True)

    async def submit(self, texts: list[str], pairs: Optional[list[str]] = None) -> np.ndarray:
        """The probabilities of ``texts`` (rows in order), computed in whichever batch they join."""
        if self._stopping or self._arrived is None:
            raise RuntimeError("the batcher is not running")
        request = _Request(texts, pairs, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            # A request whose handler was cancelled (its client gone, or the drain timed out) is not computed.
            batch = [request for request in await self._gather() if not request.future.cancelled()]
            if not batch:
                continue
            texts = [t for r in batch for t in r.texts]
            pairs = None if batch[0].pairs is None else [p for r in batch for p in r.pairs]
            try:
                probs = await loop.run_in_executor(self._thread, self.predict, texts, pairs)
            except Exception as err:  # handed to every waiting request, which answers 500; the worker goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            self.batches += 1
            start = 0
            for request in batch:
                rows = probs[start:start + len(request.texts)]
                start += len(request.texts)
                if not request.future.done():  # a client that went away
                    request.future.set_result(rows)

    async def _gather(self) -> list[_Request]:
        """The next batch: the oldest request, plus those that arrive and fit within the wait."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].texts)
        if not self.enabled:
            return batch
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch_size:
            if self._waiting:
                if size + len(self._waiting[0].texts) > self.max_batch_size:
                    break  # it starts the next batch
                request = self._waiting.popleft()
                batch.append(request)
                size += len(request.texts)
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stopping:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch
