"""hub/heap.py: a slow full collection freezes what is alive (later collections skip it); a fast
one freezes nothing; a collection in another thread (the writer's) freezes on the loop; nothing
is frozen once the block ends."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from hub import heap


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process keeps no frozen heap


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_fast_full_collection_freezes_nothing() -> None:
    with heap.kept(asyncio.get_running_loop(), slow_ms=60_000) as keeper:
        gc.collect()
        await turns()
    assert keeper.freezes == 0
    assert gc.get_freeze_count() == 0


async def test_a_slow_full_collection_freezes_what_is_alive() -> None:
    alive = [[i] for i in range(20_000)]
    with heap.kept(asyncio.get_running_loop(), slow_ms=0) as keeper:
        gc.collect()  # a full collection: "slow" at this bound
        await turns()
        assert keeper.freezes == 1
        assert gc.get_freeze_count() >= len(alive)
        gc.collect(1)  # a younger collection: not the keeper's business
        await turns()
        assert keeper.freezes == 1


async def test_a_collection_in_the_writers_thread_freezes_on_the_loop() -> None:
    with heap.kept(asyncio.get_running_loop(), slow_ms=0) as keeper:
        await asyncio.to_thread(gc.collect)
        await turns()
    assert keeper.freezes == 1


async def test_nothing_is_frozen_after_the_block() -> None:
    with heap.kept(asyncio.get_running_loop(), slow_ms=0):
        pass
    gc.collect()
    await turns()
    assert gc.get_freeze_count() == 0
