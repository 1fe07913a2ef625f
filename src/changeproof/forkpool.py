"""Batches handled in forked worker processes, answers back in order, no helper threads.

``ordered_map(handle, batches, jobs)`` forks ``jobs`` workers that inherit ``handle`` (and
everything it closes over: a read-only context is never pickled), sends each batch to the
least busy worker, and yields the answers in batch order. One event loop in the calling
thread moves the bytes: non-blocking pipes and ``select``, so a worker blocked writing a
large answer can never wedge the parent writing it a large batch (the deadlock a plain
blocking design has), and no task or result threads compete with the caller for the GIL
(``multiprocessing.Pool`` runs three).

Failures: an exception in a worker is pickled back and raised in the caller at that batch's
turn (its type kept, so callers see what they would in-process); a worker that dies raises
:class:`~changeproof.errors.ChangeproofError`. However the generator ends (exhausted, an error,
``close()``), the workers are stopped and reaped. Linux and macOS (fork) only: callers check
:func:`available` and work in-process otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

from changeproof.errors import ChangeproofError

_T = TypeVar("_T")
_R = TypeVar("_R")

_HEAD = struct.Struct("<BQ")  # kind (0 answer, 1 error), payload length
_ANSWER, _ERROR = 0, 1
_PIPE_BYTES = 1 << 20  # asked of Linux per pipe: fewer wake-ups for megabyte batches
_F_SETPIPE_SZ = 1031


def available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "waitpid")


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, _PIPE_BYTES))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(handle: Callable[[Any], Any], tasks: int, answers: int) -> None:
    """A worker: batches in, answers out, until the parent closes its end (or goes away)."""
    while True:
        head = _read_exactly(tasks, _HEAD.size)
        if head is None:
            return
        _, size = _HEAD.unpack(head)
        body = _read_exactly(tasks, size)
        if body is None:
            return
        try:
            # pickle between this process and its own parent over private pipes
            kind, out = _ANSWER, pickle.dumps(handle(pickle.loads(body)), protocol=5)  # noqa: S301
        except BaseException as exc:  # raised in the parent at this batch's turn
            try:
                kind, out = _ERROR, pickle.dumps(exc, protocol=5)
            except Exception:
                kind, out = _ERROR, pickle.dumps(RuntimeError(repr(exc)), protocol=5)
        _write_all(answers, _HEAD.pack(kind, len(out)) + out)


class _Worker:
    def __init__(self, pid: int, tasks: int, answers: int) -> None:
        self.pid = pid
        self.tasks = tasks  # the parent's (non-blocking) write end
        self.answers = answers  # the parent's (non-blocking) read end
        self.outgoing = bytearray()
        self.incoming = bytearray()
        self.waiting: deque[int] = deque()  # batch numbers sent, answers not yet read


def _start(
    jobs: int, handle: Callable[[Any], Any], setup: Callable[[], None] | None
) -> list[_Worker]:
    workers: list[_Worker] = []
    try:
        for _ in range(jobs):
            task_r, task_w = os.pipe()
            ans_r, ans_w = os.pipe()
            for fd in (task_w, ans_w):
                _widen(fd)
            pid = os.fork()
            if pid == 0:  # the worker
                code = 0
                try:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
                    # only its own two ends: EOF on the task pipe must mean "the parent is done"
                    for w in workers:
                        os.close(w.tasks)
                        os.close(w.answers)
                    os.close(task_w)
                    os.close(ans_r)
                    if setup is not None:
                        setup()
                    _serve(handle, task_r, ans_w)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.close(task_r)
            os.close(ans_w)
            os.set_blocking(task_w, False)
            os.set_blocking(ans_r, False)
            workers.append(_Worker(pid, task_w, ans_r))
    except BaseException:
        _stop(workers)
        raise
    return workers


def _stop(workers: list[_Worker]) -> None:
    for w in workers:
        for fd in (w.tasks, w.answers):  # EOF (or EPIPE) tells the worker to go
            with contextlib.suppress(OSError):
                os.close(fd)
    for w in workers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(w.pid, 0)


def ordered_map(
    handle: Callable[[_T], _R],
    batches: Iterable[_T],
    jobs: int,
    *,
    in_flight: int = 2,
    setup: Callable[[], None] | None = None,
) -> Generator[_R, None, None]:
    """``handle(batch)`` for every batch, in ``jobs`` forked workers; answers in batch order.
    At most ``in_flight`` batches per worker are sent and unanswered (bounded memory);
    ``setup`` runs once in each worker after the fork."""
    workers = _start(jobs, handle, setup)
    try:
        yield from _loop(workers, iter(batches), in_flight)
    finally:
        _stop(workers)


def _loop(workers: list[_Worker], batches: Iterator[Any], in_flight: int) -> Iterator[Any]:
    answers: dict[int, tuple[int, bytes]] = {}
    sent = 0  # batches handed out
    turn = 0  # the next batch to answer
    more = True
    while True:
        # hand out batches while some worker has room (the least busy one first)
        while more:
            w = min(workers, key=lambda x: len(x.waiting))
            if len(w.waiting) >= in_flight:
                break
            try:
                batch = next(batches)
            except StopIteration:
                more = False
                break
            body = pickle.dumps(batch, protocol=5)
            w.outgoing += _HEAD.pack(_ANSWER, len(body))
            w.outgoing += body
            w.waiting.append(sent)
            sent += 1
        if turn in answers:
            kind, body = answers.pop(turn)
            turn += 1
            value = pickle.loads(body)  # noqa: S301 - from our own forked worker
            if kind == _ERROR:
                raise value
            yield value
            continue
        if not more and turn == sent:
            return
        readers = [w.answers for w in workers if w.waiting]
        writers = [w.tasks for w in workers if w.outgoing]
        can_read, can_write, _ = select.select(readers, writers, [])
        for w in workers:
            if w.tasks in can_write:
                try:
                    n = os.write(w.tasks, w.outgoing[:_PIPE_BYTES])
                except BlockingIOError:
                    n = 0
                except BrokenPipeError:
                    raise _died(w) from None
                del w.outgoing[:n]
            if w.answers in can_read:
                try:
                    chunk = os.read(w.answers, _PIPE_BYTES)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise _died(w)
                w.incoming += chunk
                while len(w.incoming) >= _HEAD.size:
                    kind, size = _HEAD.unpack_from(w.incoming)
                    end = _HEAD.size + size
                    if len(w.incoming) < end:
                        break
                    answers[w.waiting.popleft()] = (kind, bytes(w.incoming[_HEAD.size : end]))
                    del w.incoming[:end]


def _died(w: _Worker) -> ChangeproofError:
    status = ""
    # its pipe closes a moment before the exit status can be collected: wait up to a second
    with contextlib.suppress(ChildProcessError):
        for _ in range(100):
            pid, code = os.waitpid(w.pid, os.WNOHANG)
            if pid:
                status = (
                    f" (killed by signal {os.WTERMSIG(code)})"
                    if os.WIFSIGNALED(code)
                    else f" (exit status {os.WEXITSTATUS(code)})"
                )
                break
            time.sleep(0.01)
    return ChangeproofError(
        f"a worker process ({w.pid}) stopped unexpectedly{status}",
        expected="every worker to answer every batch it was given",
        hint="look for an out-of-memory kill in the system log; run again, or with --jobs 1",
    )
