"""Dynamic batching for the HTTP server: concurrent requests gathered into one forward pass.

Each request hands its texts to :meth:`DynamicBatcher.submit` and awaits its rows of
probabilities. One worker task takes the oldest waiting request, then keeps adding waiting
requests until the batch holds ``max_batch_size`` texts or ``max_wait_ms`` have passed since it
started gathering, and runs the whole batch in one call of ``predict`` on a single model thread
(so the event loop keeps accepting requests meanwhile). ``predict`` is the classifier's
``predict_proba``: it tokenizes the batch once and sorts it by length, so gathered requests share
padding-efficient forward passes. A request is never split; one larger than ``max_batch_size``
runs alone. With batching off, every request is its own forward pass, in arrival order.

The queue is bounded: ``max_queue`` texts may wait for a forward pass (the one running does not
count). A request that would go past it is refused at once with :class:`Overloaded`, which carries
an estimate of when to retry (the waiting texts at the recent speed), so a burst beyond what the
model can keep up with gets fast refusals instead of ever longer waits and growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

Predict = Callable[[list[str], Optional[list[str]]], np.ndarray]


class Overloaded(Exception):
    """A request refused because the queue is full (or the batcher is stopping); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


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
        max_queue: most texts waiting for a forward pass; a request that would go past it gets :class:`Overloaded`.
    """

    def __init__(self, predict: Predict, max_batch_size: int = 64, max_wait_ms: float = 5.0, enabled: bool = True,
                 max_queue: int = 1024):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.enabled = enabled
        self.max_queue = max_queue
        self.batches = 0  # forward calls so far, for /info and tests
        self.queued = 0  # texts submitted and not yet handed to the model thread
        self.refused = 0  # requests refused with Overloaded
        self._seconds_per_text: Optional[float] = None  # moving average over recent forward passes
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
        """The probabilities of ``texts`` (rows in order), computed in whichever batch they join.

        Raises:
            Overloaded: the queue has no room for ``texts``, or the batcher is stopping.
        """
        if self._stopping or self._arrived is None:
            self.refused += 1
            raise Overloaded("the server is shutting down", retry_after=1)
        if self.queued + len(texts) > self.max_queue:
            self.refused += 1
            raise Overloaded(f"{self.queued} texts are already waiting for the model and this request has {len(texts)}; "
                             f"the queue holds at most {self.max_queue}", self.retry_after())
        request = _Request(texts, pairs, asyncio.get_running_loop().create_future())
        self.queued += len(texts)
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
            gathered = await self._gather()
            self.queued -= sum(len(request.texts) for request in gathered)
            # A request whose handler was cancelled (its client gone, or the drain timed out) is not computed.
            batch = [request for request in gathered if not request.future.cancelled()]
            if not batch:
                continue
            texts = [t for r in batch for t in r.texts]
            pairs = None if batch[0].pairs is None else [p for r in batch for p in r.pairs]
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._thread, self.predict, texts, pairs)
            except Exception as err:  # handed to every waiting request, which answers 500; the worker goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            self._timed(len(texts), time.perf_counter() - started)
            self.batches += 1
            start = 0
            for request in batch:
                rows = probs[start:start + len(request.texts)]
                start += len(request.texts)
                if not request.future.done():  # a client that went away
                    request.future.set_result(rows)

    def retry_after(self) -> int:
        """Whole seconds after which the texts waiting now should be done, at the recent speed (1 to 60)."""
        if self._seconds_per_text is None:
            return 1
        return min(60, max(1, math.ceil(self.queued * self._seconds_per_text)))

    def _timed(self, texts: int, seconds: float) -> None:
        per_text = seconds / max(texts, 1)
        previous = self._seconds_per_text
        self._seconds_per_text = per_text if previous is None else 0.8 * previous + 0.2 * per_text

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
