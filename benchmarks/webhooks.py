"""Webhook intake under load, and survival of kill -9.

Usage: python benchmarks/webhooks.py [--sustained N] [--crash N] [--concurrency C] [--keep DIR]

1. Starts `changeproof serve` (a real uvicorn process, SQLite WAL workspace) on loopback.
2. A second process sends N signed GitHub deliveries (corpus payloads with unique delivery
   ids and X-Hub-Signature-256, each HMAC computed per delivery) over C keep-alive HTTP/1.1
   connections: sustained deliveries/s and p99 latency. The sender is a lean asyncio client
   (uvloop when installed, responses parsed by httptools): it shares the two cores with the
   server, and a general-purpose client (httpx) spent ~3.5 ms of CPU per request — more
   than the server — so it, not the server, set the rate. Both processes' CPU per delivery
   are reported.
3. It sends N more and the server is killed with SIGKILL mid-load. Every delivery the server
   had acknowledged (2xx) must already be in the locker (checked on the database the dead
   server left behind).
4. The server is restarted and every delivery (both phases) is redelivered, as GitHub's
   "redeliver" does (same delivery id). Each delivery must then be in the locker exactly
   once; the locker chain must verify.

Prints a table and, as the last line, one JSON object:
{"deliveries_per_s", "p99_ms", "lost", "duplicated", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SECRET = "bench-secret"
ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ROOT / "tests" / "fixtures" / "webhooks" / "github"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the load generator (runs as a second process) ---------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one request at a time.

    A lean client on purpose: the load generator shares the two cores with the server, so
    every microsecond it spends is taken from the server. Responses are parsed with
    httptools (the C parser uvicorn uses), so a malformed or chunked answer is still read
    correctly; only the status code and the end of the message matter here.
    """

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # a malformed answer: this request failed
            self._fail(exc)
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(int(self.parser.get_status_code()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(self, data: list[bytes], timeout: float = 30) -> int:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self.waiter = waiter
        late = loop.call_later(timeout, self._fail, TimeoutError("no answer in time"))
        self.transport.writelines(data)
        try:
            return await waiter
        finally:
            late.cancel()


def load_main(url: str, ids: list[str], concurrency: int) -> None:
    """Send the deliveries named ``ids`` ("prefix-N": payload N mod the corpus); print one
    JSON line per delivery: [id, status, latency ms, time], then the generator's own CPU
    seconds as ``["cpu", seconds]``."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, port = url.removeprefix("http://").rsplit(":", 1)
    bodies = [(p.parent.name, p.read_bytes()) for p in sorted(PAYLOADS.glob("*/*.json"))]
    key = SECRET.encode()
    cpu0 = time.process_time()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        todo = iter(ids)
        out: list[str] = []

        async def worker() -> None:
            conn: _Conn | None = None
            for did in todo:
                event, body = bodies[int(did.rsplit("-", 1)[1]) % len(bodies)]
                # signed per delivery, as GitHub does: the server checks each one
                sig = hmac.new(key, body, hashlib.sha256).hexdigest()
                head = (
                    f"POST /webhooks/github HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"User-Agent: GitHub-Hookshot/bench\r\nContent-Type: application/json\r\n"
                    f"X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {did}\r\n"
                    f"X-Hub-Signature-256: sha256={sig}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                t0 = time.perf_counter()
                try:
                    if conn is None or conn.closed:
                        _, conn = await loop.create_connection(_Conn, host, int(port))
                    status = await conn.request([head, body])
                except OSError:
                    status = 0  # connection refused/reset: the server is gone
                    if conn is not None and conn.transport is not None:
                        conn.transport.close()
                    conn = None
                ms = (time.perf_counter() - t0) * 1000
                out.append(json.dumps([did, status, round(ms, 3), time.time()]))
            if conn is not None and conn.transport is not None:
                conn.transport.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.append(json.dumps(["cpu", time.process_time() - cpu0]))
        sys.stdout.write("\n".join(out) + "\n")

    asyncio.run(run())


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def load(url: str, send: list[str], concurrency: int) -> subprocess.Popen[str]:
    """Start the load generator now (the ids go in through a file: no pipe to fill)."""
    fd, name = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(send, fh)
    return subprocess.Popen(
        [sys.executable, __file__, "--load", url, str(concurrency), name],
        stdout=subprocess.PIPE,
        text=True,
    )


def results(proc: subprocess.Popen[str]) -> list[tuple[str, int, float, float]]:
    return results_cpu(proc)[0]


def results_cpu(proc: subprocess.Popen[str]) -> tuple[list[tuple[str, int, float, float]], float]:
    """The load generator's answers, and its own CPU seconds."""
    out, _ = proc.communicate(timeout=900)
    rows = [json.loads(line) for line in out.splitlines() if line]
    cpu = [r[1] for r in rows if r[0] == "cpu"]
    return [tuple(r) for r in rows if r[0] != "cpu"], (cpu[0] if cpu else float("nan"))


# --- the server --------------------------------------------------------------------------


def serve(home: Path, cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHANGEPROOF_GITHUB_WEBHOOK_SECRET": SECRET}
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "changeproof", "--home", str(home), "--config", str(cfg),
             "serve", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=fh, stderr=fh,
        )  # fmt: skip
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def drain(port: int, timeout_s: float = 300) -> tuple[bool, float]:
    """Wait until the server has processed every pending delivery; (drained, seconds)."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10)
        if not r.json()["deliveries"].get("pending"):
            return True, time.perf_counter() - t0
        time.sleep(0.1)
    return False, time.perf_counter() - t0


def locker_ids(db: Path) -> Counter[str]:
    """Delivery ids of the envelopes in the locker chain (read with sqlite3 directly)."""
    import sqlite3

    from changeproof.web.webhooks import parse_envelope

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT o.body FROM locker_entries e JOIN locker_objects o ON o.digest = e.digest "
            "WHERE e.kind = 'webhook.github'"
        ).fetchall()
    finally:
        con.close()
    return Counter(parse_envelope(bytes(r[0]))[0]["delivery"] for r in rows)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): the machine may be shared."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        path = Path(sys.argv[4])
        send = json.loads(path.read_text())
        path.unlink()
        load_main(sys.argv[2], send, int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sustained", type=int, default=5000, help="deliveries in the timed phase")
    ap.add_argument("--crash", type=int, default=4000, help="deliveries in the kill -9 phase")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--keep", type=Path, help="keep the workspace here")
    a = ap.parse_args()

    root = a.keep or Path(tempfile.mkdtemp(prefix="cp-webhooks-"))
    root.mkdir(parents=True, exist_ok=True)
    home, cfg = root / ".changeproof", root / "changeproof.toml"
    cfg.write_text('controlled_branches = ["main"]\n', encoding="utf-8")
    db = home / "store.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    server = serve(home, cfg, port, root / "server.log")
    stack = re.search(r"HTTP (\S+), event loop (\S+)\)", (root / "server.log").read_text())
    # warm-up (imports, first connections), not timed
    results(load(url, ids("warm", 200), a.concurrency))
    cpu0 = proc_cpu_s(server.pid)
    t0 = time.perf_counter()
    sustained, load_cpu = results_cpu(load(url, ids("s", a.sustained), a.concurrency))
    wall = time.perf_counter() - t0
    server_cpu = proc_cpu_s(server.pid) - cpu0
    load_avg = os.getloadavg()[0]
    # processing is asynchronous (it defers to intake, for up to 2 s): what was left of it
    # when the sending stopped, separately
    drained, drain_s = drain(port)
    process_cpu = proc_cpu_s(server.pid) - cpu0 - server_cpu
    ok = [r for r in sustained if 200 <= r[1] < 300]
    # the sending window (first request sent → last answer), without the generator's start-up
    window = max(r[3] for r in sustained) - min(r[3] - r[2] / 1000 for r in sustained)
    rate = len(ok) / window
    p50, p99 = pct([r[2] for r in ok], 50), pct([r[2] for r in ok], 99)

    # kill -9 mid-load
    crash_job = load(url, ids("c", a.crash), a.concurrency)
    kill_after = max(0.5, a.crash / max(rate, 1) / 2)  # about half-way through
    time.sleep(kill_after)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    crashed = results(crash_job)
    acked = {r[0] for r in crashed if 200 <= r[1] < 300}
    after_kill = locker_ids(db)
    acked_missing = sorted(d for d in acked if after_kill[d] == 0)

    # restart and redeliver everything
    server = serve(home, cfg, port, root / "server.log")
    try:
        redeliver = results(load(url, ids("s", a.sustained) + ids("c", a.crash), a.concurrency))
        refused_codes = Counter(r[1] for r in redeliver if not 200 <= r[1] < 300)
        # a 503 means "nothing kept, send again": a sender retries it (bounded here)
        for _ in range(3):
            again = [r[0] for r in redeliver if not 200 <= r[1] < 300]
            if not again:
                break
            retried = {r[0]: r for r in results(load(url, again, a.concurrency))}
            redeliver = [retried.get(r[0], r) for r in redeliver]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    final = locker_ids(db)
    expected = {f"s-{i}" for i in range(a.sustained)} | {f"c-{i}" for i in range(a.crash)}
    lost = sorted(d for d in expected if final[d] == 0)
    duplicated = sorted(d for d, n in final.items() if n > 1)
    redelivered_dup = sum(1 for r in redeliver if r[1] == 200)
    refused = [r for r in redeliver if not 200 <= r[1] < 300]  # after the retries

    from changeproof.locker import verify_locker
    from changeproof.store import Store

    store = Store.open(f"sqlite:///{db}")
    try:
        rep = verify_locker(store, (home / "keys" / "locker-ed25519.pub.pem").read_bytes())
    finally:
        store.close()

    rows = [
        ("sustained deliveries", f"{len(ok)} of {a.sustained} acknowledged"),
        ("server", f"uvicorn, HTTP {stack[1]}, {stack[2]}" if stack else "uvicorn"),
        ("sustained rate", f"{rate:,.0f} deliveries/s ({a.concurrency} connections)"),
        ("latency p50 / p99", f"{p50:.1f} ms / {p99:.1f} ms"),
        ("wall time incl. generator start", f"{wall:.2f} s ({len(ok) / wall:,.0f} deliveries/s)"),
        (
            "server CPU per delivery",
            f"{server_cpu * 1000 / max(len(ok), 1):.2f} ms while sending "
            f"({len(ok) / max(server_cpu, 1e-9):,.0f} deliveries per CPU-s; intake, and the "
            "processing done meanwhile)",
        ),
        (
            "then processing the rest",
            f"{process_cpu * 1000 / max(len(ok), 1):.2f} ms per delivery "
            f"({'drained' if drained else 'NOT drained'} in {drain_s:.1f} s); "
            f"total {(server_cpu + process_cpu) * 1000 / max(len(ok), 1):.2f} ms",
        ),
        (
            "load generator CPU per delivery",
            f"{load_cpu * 1000 / max(len(sustained), 1):.2f} ms (same 2 cores as the server)",
        ),
        ("load average (1 min)", f"{load_avg:.1f} on {os.cpu_count()} cpus"),
        (
            "kill -9 phase",
            f"{len(acked)} of {a.crash} acknowledged before SIGKILL after "
            f"{kill_after:.1f} s; answers {dict(Counter(r[1] for r in crashed))}",
        ),
        ("acknowledged but not in locker", str(len(acked_missing))),
        (
            "redelivered",
            f"{len(redeliver)} ({redelivered_dup} recognised as already stored, "
            f"{len(refused)} refused after retries)",
        ),
        ("refused on first redelivery", dict(refused_codes) or "none"),
        ("in locker (distinct deliveries)", f"{len(final)}"),
        ("lost / duplicated", f"{len(lost)} / {len(duplicated)}"),
        ("locker verifies", f"{rep.ok} ({rep.entries} entries, {rep.checkpoints} checkpoints)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not a.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({
        "deliveries_per_s": round(rate, 1), "p99_ms": round(p99, 2), "p50_ms": round(p50, 2),
        "lost": len(lost) + len(acked_missing), "duplicated": len(duplicated),
        "acked_before_kill": len(acked), "locker_ok": rep.ok, "sustained": a.sustained,
        "crash_phase": a.crash, "concurrency": a.concurrency,
        "server_cpu_ms_per_delivery": round(server_cpu * 1000 / max(len(ok), 1), 3),
        "process_cpu_ms_per_delivery": round(process_cpu * 1000 / max(len(ok), 1), 3),
        "server_total_cpu_ms_per_delivery": round(
            (server_cpu + process_cpu) * 1000 / max(len(ok), 1), 3
        ),
        "load_cpu_ms_per_delivery": round(load_cpu * 1000 / max(len(sustained), 1), 3),
        "load_avg_1m": round(load_avg, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
