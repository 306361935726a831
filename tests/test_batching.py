"""The dynamic batcher of nlp-transfer serve: gathering, and the bounded queue (refusal, accounting, recovery).

The model is a function on the model thread that waits for the test to release it, so what is
queued and what is running is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from nlp_transfer.batching import DynamicBatcher, Overloaded


class HeldModel:
    """One probability row per text (its length, so answers can be told apart); each call waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str], pairs) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the model")
        return np.array([[float(len(t)), 1.0] for t in texts])


async def _until(condition, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_a_full_queue_refuses_at_once_and_serves_again_once_drained():
    model = HeldModel()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=4)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit(["running"]))
        await _until(model.entered.is_set)  # handed to the model thread: no longer counts as queued
        assert batcher.queued == 0
        waiting = [asyncio.ensure_future(batcher.submit(texts)) for texts in (["a", "bb"], ["ccc"])]
        await _until(lambda: batcher.queued == 3)
        with pytest.raises(Overloaded, match="3 texts are already waiting .* has 2; the queue holds at most 4") as err:
            await batcher.submit(["dddd", "eeeee"])  # 3 + 2 > 4: refused although one text would fit
        assert err.value.retry_after == 1  # no forward pass timed yet
        waiting.append(asyncio.ensure_future(batcher.submit(["ffffff"])))  # 3 + 1 == 4: accepted
        await _until(lambda: batcher.queued == 4)
        with pytest.raises(Overloaded):
            await batcher.submit(["g"])
        assert batcher.refused == 2 and not any(f.done() for f in waiting)

        model.release.set()
        assert (await running)[:, 0].tolist() == [7.0]
        answers = [await f for f in waiting]
        assert [a[:, 0].tolist() for a in answers] == [[1.0, 2.0], [3.0], [6.0]]  # rows back to their requests
        assert batcher.queued == 0 and batcher.batches == 2  # the three waiting requests shared one pass
        assert (await batcher.submit(["h" * 4] * 4))[:, 0].tolist() == [4.0] * 4  # serving again, full size
        await batcher.stop()

    asyncio.run(scenario())
    assert model.calls == [["running"], ["a", "bb", "ccc", "ffffff"], ["hhhh"] * 4]


def test_cancelled_requests_leave_the_queue_and_retry_after_follows_the_measured_speed():
    model = HeldModel()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=2, max_wait_ms=0, max_queue=10)
        await batcher.start()
        model.release.set()
        await batcher.submit(["x", "y"])  # times one forward pass
        model.release.clear()
        model.entered.clear()
        running = asyncio.ensure_future(batcher.submit(["r"]))
        await _until(model.entered.is_set)
        gone = asyncio.ensure_future(batcher.submit(["p", "q"]))  # a client that goes away while waiting
        kept = asyncio.ensure_future(batcher.submit(["k"]))
        await _until(lambda: batcher.queued == 3)
        batcher._seconds_per_text = 7.0  # as if the model took 7 s a text: 3 waiting texts, 21 s
        assert batcher.retry_after() == 21
        batcher._seconds_per_text = 100.0
        assert batcher.retry_after() == 60  # capped: a client should look again within a minute
        gone.cancel()
        model.release.set()
        await running
        assert (await kept)[:, 0].tolist() == [1.0]
        assert batcher.queued == 0
        await batcher.stop()
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit(["late"])

    asyncio.run(scenario())
    assert ["p", "q"] not in model.calls and model.calls[-1] == ["k"]  # the cancelled request was not computed
