"""The server's bounded work: model slots, worker queues and the decoding memory budget."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from searchengine.server.workers import (
    RETRY_FIRST,
    MemoryBudget,
    ModelSlot,
    OverBudget,
    Unavailable,
    Worker,
)


class Loader:
    """A model load that blocks until released, and may fail; counts its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.error = error

    def __call__(self) -> str:
        self.calls += 1
        self.release.wait(10)
        if self.error is not None:
            raise self.error
        return "the model"


def settle(slot: ModelSlot, state: str) -> None:
    deadline = time.monotonic() + 10
    while slot.state().state != state:
        assert time.monotonic() < deadline, slot.state()
        time.sleep(0.01)


def test_a_request_never_waits_for_a_load() -> None:
    loader = Loader()
    slot = ModelSlot("caption", "blip", loader)
    assert slot.state().state == "idle"  # nothing loads until asked for
    started = time.monotonic()
    with pytest.raises(Unavailable, match="caption model blip is loading") as raised:
        slot.get()
    assert time.monotonic() - started < 1.0
    assert raised.value.retry_after == 5
    assert slot.state().state == "loading"
    with pytest.raises(Unavailable):
        slot.get()  # asked again while loading: no second load
    loader.release.set()
    settle(slot, "ready")
    assert slot.get() == "the model"
    assert loader.calls == 1


def test_a_failure_is_remembered_and_retried_after_a_back_off() -> None:
    now = [1000.0]
    loader = Loader(OSError("the hub did not answer\nmore detail"))
    loader.release.set()
    slot = ModelSlot("caption", "blip", loader, clock=lambda: now[0])
    with pytest.raises(Unavailable):
        slot.get()
    settle(slot, "failed")
    state = slot.state()
    assert state.error == "the hub did not answer"
    assert state.retry_in == RETRY_FIRST
    for _ in range(5):  # every request meanwhile: an answer at once, no new attempt
        with pytest.raises(Unavailable, match=r"cannot be loaded \(the hub did not answer") as e:
            slot.get()
        assert e.value.retry_after == RETRY_FIRST
    assert loader.calls == 1
    now[0] += RETRY_FIRST / 2
    with pytest.raises(Unavailable) as raised:
        slot.get()
    assert raised.value.retry_after == RETRY_FIRST / 2
    now[0] += RETRY_FIRST / 2
    with pytest.raises(Unavailable):
        slot.get()  # the back-off ran out: this request starts a second attempt
    settle(slot, "failed")
    assert loader.calls == 2
    assert slot.state().retry_in == 2 * RETRY_FIRST  # and the next wait is longer


def test_a_model_handed_in_is_ready_and_stays_its_owners() -> None:
    class Model:
        closed = False

        def close(self) -> None:
            self.closed = True

    given, made = Model(), Model()
    handed = ModelSlot("rerank", "m", lambda: given, loaded=given)
    assert handed.get() is given and handed.state().state == "ready"
    handed.close()
    assert not given.closed
    loaded = ModelSlot("rerank", "m", lambda: made, patience=5)
    assert loaded.get() is made  # a quick load answers within the patience
    loaded.close()
    assert made.closed


def test_load_now_raises_the_loaders_own_error() -> None:
    slot = ModelSlot("search", "toy", Loader(ValueError("no such model")))
    slot._load.release.set()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no such model"):
        slot.load_now()
    assert slot.state().state == "failed"


def test_a_worker_runs_calls_in_turn_and_refuses_beyond_its_depth() -> None:
    gate = threading.Event()
    worker = Worker("caption", threads=1, depth=2, retry_after=30)
    running = worker.submit(gate.wait, 10)
    waiting = [worker.submit(lambda i=i: i * 10) for i in range(2)]
    with pytest.raises(Unavailable, match="busy: 3 caption requests are ahead") as refused:
        worker.submit(lambda: None)
    assert refused.value.retry_after == 30
    gate.set()
    assert running.result(5) is True
    assert [f.result(5) for f in waiting] == [0, 10]
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    assert worker.pending == 0
    worker.stop()


def test_awaiting_a_worker_leaves_the_event_loop_free() -> None:
    worker = Worker("search", threads=1)
    gate = threading.Event()

    async def main() -> list[str]:
        order: list[str] = []
        slow = asyncio.ensure_future(worker.run(lambda: gate.wait(10) and order.append("model")))
        await asyncio.sleep(0.05)
        order.append("loop")  # the loop runs while the model call waits
        gate.set()
        await slow
        return order

    assert asyncio.run(main()) == ["loop", "model"]
    worker.stop()


def test_the_budget_bounds_memory_held_at_once() -> None:
    budget = MemoryBudget(100, wait=5)
    with pytest.raises(OverBudget, match="over this server's"), budget.hold(101):
        pass
    entered = threading.Event()
    inside: list[int] = []

    def second() -> None:
        with budget.hold(60):
            inside.append(budget.used)
            entered.set()

    with budget.hold(60):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.2)  # 60 + 60 > 100: it waits for the first
    thread.join(5)
    assert inside == [60] and budget.used == 0 and budget.peak == 60
    quick = MemoryBudget(100, wait=0.1)
    with quick.hold(80), pytest.raises(Unavailable, match="busy decoding"), quick.hold(80):
        pass
