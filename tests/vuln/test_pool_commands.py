"""Several commands through one pool (ParsePool.ingest_commands): the parsers work on the next
command's files while one commits, and every command stores exactly what it stores alone —
rows, raw payloads and the locker chain, byte for byte — and stays all or nothing."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeproof.errors import InputFormatError
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store, Writer
from changeproof.vuln.ingest import FileResult, ParseJob, ingest_jobs
from changeproof.vuln.pool import ParsePool, _Feed
from tests.vuln.test_pool_paths import FILES, NOW, _dump, _jobs, _store, both_backends

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the pool forks (Linux)")


def _split(jobs: list[ParseJob], sizes: list[int]) -> list[list[ParseJob]]:
    out, at = [], 0
    for n in sizes:
        out.append(jobs[at : at + n])
        at += n
    out.append(jobs[at:])
    return out


def _one_by_one(store: Store, signer: Signer, commands: list[list[ParseJob]]) -> list[list[str]]:
    """Each command in its own transaction, parsed in this process: the reference."""
    out = []
    for cmd in commands:
        with store.writer(Locker(signer, clock_us=7)) as w:
            out.append([repr(vars(r)) for r in ingest_jobs(w, cmd, now=NOW, settings=Settings())])
    return out


@pytest.mark.parametrize(
    ("workers", "in_flight", "window", "with_bytes", "queue_bytes"),
    [
        (1, 1, 1, False, None),  # nothing runs ahead: the next command waits for this one
        (2, 4, None, False, None),  # the next command's files sent while this one commits
        (2, 8, 64, True, None),  # the window spans several commands; some files as bytes
        (3, 2, 5, True, None),
        (2, None, None, False, None),  # the defaults
        (2, None, None, True, 1),  # one file queued per worker, whatever its size
        (2, None, None, False, 300_000),  # a few small files, or one large one
    ],
)
def test_commands_store_exactly_what_they_store_one_by_one(
    tmp_path: Path,
    workers: int,
    in_flight: int | None,
    window: int | None,
    with_bytes: bool,
    queue_bytes: int | None,
) -> None:
    jobs = _jobs(with_bytes=with_bytes) * 3
    commands = _split(jobs, [5, 0, 1, 7, 2])  # (an empty command among them)
    store, signer = _store(tmp_path, "seq")
    try:
        seq = _one_by_one(store, signer, commands)
        want = _dump(store)
    finally:
        store.close()
    store, signer = _store(tmp_path, "pool")
    try:
        pool = ParsePool(workers, in_flight=in_flight, window=window)
        if queue_bytes is not None:
            pool.queue_bytes = queue_bytes
        with pool:
            got = [
                [repr(vars(r)) for r in results]
                for results in pool.ingest_commands(
                    lambda: store.writer(Locker(signer, clock_us=7)),
                    commands,
                    now=NOW,
                    settings=Settings(),
                )
            ]
        assert _dump(store) == want
    finally:
        store.close()
    assert got == seq
    assert len(got) == len(commands) and want["evidence"] and want["entries"]


def test_a_bad_file_fails_its_command_only_and_stops_the_rest(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(FILES[2][1].read_bytes()[:4000])
    good = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES[:6]]
    bad = ParseJob("sarif", str(cut), None, "acme/app")
    commands = [good, good[:3], [*good[:2], bad, *good], good]
    # the reference: the commands before the bad one, each alone
    store, signer = _store(tmp_path, "seq")
    try:
        _one_by_one(store, signer, commands[:2])
        want = _dump(store)
    finally:
        store.close()
    store, signer = _store(tmp_path, "pool")
    done = []
    try:
        with ParsePool(2, in_flight=8) as pool:
            with pytest.raises(InputFormatError, match=r"cut\.json: the JSON ends early"):
                for results in pool.ingest_commands(
                    lambda: store.writer(Locker(signer, clock_us=7)),
                    commands,
                    now=NOW,
                    settings=Settings(),
                ):
                    done.append(len(results))
            assert pool._procs == []  # stopped: answers in flight belong to no one
        assert done == [6, 3]
        assert _dump(store) == want
    finally:
        store.close()


def test_jobs_that_fail_while_the_command_before_is_written(tmp_path: Path) -> None:
    good = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES[:6]]
    asked = []

    def failing() -> Iterator[ParseJob]:
        asked.append("third")
        yield from good[:2]
        raise InputFormatError(f"{tmp_path / 'gone.json'}: no such file")

    def commands() -> Iterator[list[ParseJob] | Iterator[ParseJob]]:
        yield good
        yield good[:4]
        yield failing()
        yield good  # never started

    store, signer = _store(tmp_path, "seq")
    try:
        _one_by_one(store, signer, [good, good[:4]])
        want = _dump(store)
    finally:
        store.close()
    store, signer = _store(tmp_path, "pool")
    done: list[list[FileResult]] = []
    try:
        with (
            ParsePool(2, in_flight=4) as pool,
            pytest.raises(InputFormatError, match=r"gone\.json: no such file"),
        ):
            for results in pool.ingest_commands(
                lambda: store.writer(Locker(signer, clock_us=7)),
                commands(),
                now=NOW,
                settings=Settings(),
            ):
                done.append(results)
                if len(done) == 1:
                    # the third command's jobs were asked for while the first was written
                    # (its failure waits for its turn: the second still commits)
                    assert asked == ["third"]
        assert [len(r) for r in done] == [6, 4]
        assert asked == ["third"]
        assert _dump(store) == want
    finally:
        store.close()


def test_stopping_between_commands_stops_the_parsers_and_the_pool_starts_again(
    tmp_path: Path,
) -> None:
    def good(repo: str) -> list[ParseJob]:
        return [ParseJob(s, str(p), None, repo) for s, p in FILES[:6]]

    store, signer = _store(tmp_path, "pool")
    try:
        with ParsePool(2, in_flight=8) as pool:
            cmds = [good(f"acme/r{i}") for i in range(5)]
            feed = pool.ingest_commands(
                lambda: store.writer(Locker(signer)), cmds, now=NOW, settings=Settings()
            )
            assert len(next(feed)) == 6
            feed.close()  # the next command's files are on their way: they are dropped
            assert pool._procs == []
            assert store.count("scan") == 6
            # and the pool serves the next caller with fresh workers
            again = pool.ingest_commands(
                lambda: store.writer(Locker(signer)), cmds[3:], now=NOW, settings=Settings()
            )
            assert [len(r) for r in again] == [6, 6]
        assert store.count("scan") == 18
    finally:
        store.close()


def test_no_commands_open_no_unit_of_work(tmp_path: Path) -> None:
    opened = []
    store, signer = _store(tmp_path, "pool")
    try:

        def writer():  # type: ignore[no-untyped-def]
            opened.append(1)
            return store.writer(Locker(signer))

        with ParsePool(1) as pool:
            assert list(pool.ingest_commands(writer, [], now=NOW, settings=Settings())) == []
            assert [
                len(r) for r in pool.ingest_commands(writer, [[]], now=NOW, settings=Settings())
            ] == [0]
        assert opened == [1]
    finally:
        store.close()


def test_a_parser_queue_is_bounded_by_bytes_as_well_as_by_files(tmp_path: Path) -> None:
    jobs = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES[:6]]
    store, signer = _store(tmp_path, "pool")
    try:
        with ParsePool(2, in_flight=8) as pool:
            pool.queue_bytes = 1  # any file fills a queue: one each
            feed = _Feed(pool, (jobs,), now=NOW, settings=Settings())
            feed.refill()
            assert [p.busy for p in pool._procs] == [1, 1]
            assert all(p.queued == sum(p.sizes) > 0 for p in pool._procs)
            pool.queue_bytes = 1 << 30  # now only the count bounds them
            feed.refill()
            assert [p.busy for p in pool._procs] == [3, 3]
            with store.writer(Locker(signer)) as w:
                assert len(list(feed.write(w, 0))) == 6
            assert [(p.busy, p.queued) for p in pool._procs] == [(0, 0), (0, 0)]
        assert store.count("scan") == 6
    finally:
        store.close()


def _writer(store: Store, signer: Signer) -> contextlib.AbstractContextManager[Writer]:
    return store.writer(Locker(signer, clock_us=7))


def test_commands_store_the_same_on_either_backend(tmp_path: Path, db_url: str) -> None:
    commands = _split(_jobs() * 2, [7, 3])

    def ingest(store: Store, signer: Signer, workers: int) -> None:
        if not workers:
            _one_by_one(store, signer, commands)
            return
        with ParsePool(workers) as pool:
            got = [
                len(r)
                for r in pool.ingest_commands(
                    functools.partial(_writer, store, signer),
                    commands,
                    now=NOW,
                    settings=Settings(),
                )
            ]
        assert got == [len(c) for c in commands]

    dumps = both_backends(tmp_path, db_url, ingest)
    assert dumps[0] == dumps[1] and dumps[0]["evidence"]
