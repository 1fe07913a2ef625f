"""The forked worker pool the check judges with: order, big messages both ways, errors with
their type, a worker that dies, and no worker left behind however the caller stops."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from changeproof import forkpool
from changeproof.errors import ChangeproofError

pytestmark = pytest.mark.skipif(not forkpool.available(), reason="needs fork")


def _children() -> set[int]:
    """Live (not yet reaped) child processes of this process."""
    me = os.getpid()
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                out.add(int(p.name))
    return out


def test_answers_come_back_in_batch_order_whatever_the_workers_speed() -> None:
    def handle(batch: list[int]) -> list[int]:
        time.sleep(0.002 * (batch[0] % 5))  # uneven work: later batches often finish first
        return [x * x for x in batch]

    batches = [[i, i + 1000] for i in range(60)]
    got = list(forkpool.ordered_map(handle, iter(batches), 3))
    assert got == [[i * i, (i + 1000) ** 2] for i in range(60)]


def test_large_batches_and_answers_do_not_wedge_the_pipes() -> None:
    big = b"x" * (3 << 20)  # several times a pipe's capacity, in both directions

    def handle(batch: tuple[int, bytes]) -> tuple[int, bytes]:
        n, data = batch
        return n, data + bytes([n])

    got = list(forkpool.ordered_map(handle, ((i, big) for i in range(12)), 2, in_flight=3))
    assert [n for n, _ in got] == list(range(12))
    assert all(len(d) == len(big) + 1 and d[-1] == n for n, d in got)


def test_an_error_is_raised_with_its_type_at_its_batch_and_the_workers_stop() -> None:
    def handle(batch: int) -> int:
        if batch == 7:
            raise KeyError("batch seven")
        return batch

    before = _children()
    seen: list[int] = []
    with pytest.raises(KeyError, match="batch seven"):
        for v in forkpool.ordered_map(handle, range(20), 2):
            seen.append(v)
    assert seen == list(range(7))
    assert _children() == before


def test_a_worker_that_dies_is_reported_not_waited_for() -> None:
    def handle(batch: int) -> int:
        if batch == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    before = _children()
    with pytest.raises(ChangeproofError, match=r"stopped unexpectedly.*signal 9"):
        list(forkpool.ordered_map(handle, range(20), 2))
    assert _children() == before


def test_a_caller_that_stops_early_leaves_no_worker_behind() -> None:
    before = _children()
    gen = forkpool.ordered_map(lambda b: b, range(10_000), 2)
    assert next(gen) == 0
    assert len(_children() - before) == 2
    gen.close()
    assert _children() == before


def test_setup_runs_in_each_worker_not_in_the_caller() -> None:
    marks: list[int] = []

    def setup() -> None:
        marks.append(os.getpid())

    def handle(batch: int) -> tuple[int, int]:
        return batch, len(marks)

    got = list(forkpool.ordered_map(handle, range(8), 2, setup=setup))
    assert [b for b, _ in got] == list(range(8))
    assert {n for _, n in got} == {1}  # each worker ran setup once, in itself
    assert marks == []
