"""Git source: first-parent history of controlled branches → changes, with real git.

Every first-parent commit is attributed to exactly one change:

* a GitHub merge commit ("Merge pull request #N from …") or a GitLab one ("See merge request
  group/project!N") → the PR/MR N, with the commits the merge introduced;
* a squash commit ("title (#N)") → PR N;
* a Gerrit submission (``Reviewed-on:`` trailer) → that Gerrit change, with ``Reviewed-by:``
  trailers as review evidence only where the settings declare the repository Gerrit;
* a run of commits that GitHub's web-flow committed in one go → a rebase merge;
* anything else → **unattributed**, i.e. a direct push; the root commit → ``initial``.

Git alone proves no review, so changes from this source carry ``reviews=None`` (the review
controls then say ``indeterminate``) except for Gerrit trailers on a declared Gerrit repository.
The source only maps; it judges nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from changeproof.errors import SourceError
from changeproof.evidence import (
    Actor,
    Change,
    CommitInfo,
    Coverage,
    FileChange,
    Provenance,
    Review,
    sha256_bytes,
)
from changeproof.settings import Settings
from changeproof.store import Store, Writer

GITHUB_MERGE_RE = re.compile(r"^Merge pull request #(\d+) from (\S+)")
GITLAB_MR_RE = re.compile(r"^See merge request (\S+)!(\d+)\s*$", re.M)
SQUASH_RE = re.compile(r"\(#(\d+)\)\s*$")
REVIEWED_ON_RE = re.compile(r"^Reviewed-on:\s*(\S+)\s*$", re.M | re.I)
REVIEWED_BY_RE = re.compile(r"^Reviewed-by:\s*(.+?)\s*<([^>]+)>\s*$", re.M | re.I)
COAUTHOR_RE = re.compile(r"^Co-authored-by:\s*(.+?)\s*<([^>]+)>\s*$", re.M | re.I)
REVERT_RE = re.compile(r"This reverts commit ([0-9a-f]{7,40})")
GERRIT_NUM_RE = re.compile(r"(?:/\+/|/c/|/#/c/)(?:[^/]+/\+/)?(\d+)/?$")
TICKET_DEFAULT = re.compile(r"\b[A-Z][A-Z0-9]+-\d+\b")

SIG = {
    "G": "good",
    "U": "good",
    "B": "bad",
    "X": "expired",
    "Y": "expired",
    "R": "revoked",
    "E": "unknown",
    "N": "none",
}
_BLANK = b"\x00\n"
# fields of one commit in `git log` output, separated by NUL; the record ends with RS (\x1e)
FORMAT = "%x1e%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%G?%x00%B%x00"
STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type_changed",
}


@dataclass(slots=True)
class RawCommit:
    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    sig: str
    message: str
    raw: bytes
    files: list[FileChange] = field(default_factory=list)
    files_raw: bytes = b""

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0].strip()


def _run_git(path: Path, args: list[str], *, check_msg: str | None = None) -> bytes:
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, check=False, timeout=3600
        )
    except FileNotFoundError:
        raise SourceError(
            "git is not installed or not on PATH",
            expected="the git command-line tool",
            hint="install git (e.g. `apt-get install git`) and try again",
        ) from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise SourceError(check_msg or f"git {' '.join(args[:2])} failed in {path}: {err}")
    return proc.stdout


def _widen_pipe(fd: int) -> None:
    """A 1 MB pipe (Linux), so git runs ahead while Python is busy; where the system does not
    allow it (a lower limit, another OS) the default pipe does, only with more waiting."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


class _GitStream:
    """A running `git …` whose standard output is read in records as it is produced."""

    def __init__(self, path: Path, args: list[str]) -> None:
        self.path = path
        self.args = args
        try:
            self.proc = subprocess.Popen(
                ["git", "-C", str(path), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # raw reads: each returns what the pipe holds
                # full buffering: on a pipe git otherwise writes (and we read) once per commit,
                # a system call each side for every record
                env={**os.environ, "GIT_FLUSH": "0"},
            )
        except FileNotFoundError:
            raise SourceError(
                "git is not installed or not on PATH",
                expected="the git command-line tool",
                hint="install git (e.g. `apt-get install git`) and try again",
            ) from None
        assert self.proc.stdout is not None
        _widen_pipe(self.proc.stdout.fileno())

    def blocks(self, size: int = 1 << 18) -> Iterator[bytes]:
        """Raw output as it comes; raises SourceError at the end if git failed."""
        assert self.proc.stdout is not None
        # one read(2) each: whatever the pipe holds now (up to size), so parsing starts on
        # the first records git writes rather than after a full block
        read = self.proc.stdout.read
        while block := read(size):
            yield block
        err = self.proc.stderr.read() if self.proc.stderr else b""
        if self.proc.wait() != 0:
            raise SourceError(
                f"git {' '.join(self.args[:2])} failed in {self.path}: "
                + err.decode(errors="replace").strip()
            )

    def chunks(self) -> Iterator[bytes]:
        """Records separated by RS (\\x1e), each whole, in output order."""
        rest = b""
        for block in self.blocks():
            parts = (rest + block).split(b"\x1e")
            rest = parts.pop()
            yield from parts
        if rest:
            yield rest

    def __enter__(self) -> _GitStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@lru_cache(maxsize=8192)
def _dt(text: str) -> datetime:
    # cached: author and committer times repeat (a merge's, a rebase run's, a bot's)
    return datetime.fromisoformat(text).astimezone(UTC)


def parse_log(data: bytes) -> Iterator[RawCommit]:
    """Parse `git log --format=FORMAT [-z --name-status]` output."""
    return parse_stream(data.split(b"\x1e"))


def parse_stream(chunks: Iterable[bytes]) -> Iterator[RawCommit]:
    for chunk in chunks:
        rc = _parse_chunk(chunk)
        if rc is not None:
            yield rc


def _parse_chunk(chunk: bytes) -> RawCommit | None:
    """One record of `git log --format=FORMAT [-z --name-status]`; None for an empty one."""
    # (a record starts with its sha: only then can it be blank)
    if (not chunk or chunk[0] in _BLANK) and not chunk.strip(b"\x00\n"):
        return None
    parts = chunk.split(b"\x00", 10)
    if len(parts) < 10:
        raise SourceError("git log produced output changeproof cannot parse")
    # one decode for the ten header fields: NUL is ASCII, so splitting after decoding
    # gives the same fields (an invalid byte never swallows a NUL)
    head = chunk[: len(chunk) - len(parts[10]) - 1] if len(parts) == 11 else chunk
    sha, parents, an, ae, ad, cn, ce, cd, sig, msg = head.decode("utf-8", "replace").split(
        "\x00", 9
    )
    rc = RawCommit(
        sha.strip(),
        tuple(parents.split()),
        an,
        ae,
        _dt(ad),
        cn,
        ce,
        _dt(cd),
        SIG.get(sig.strip(), "unknown"),
        msg,
        chunk,
    )
    if len(parts) == 11:
        rc.files_raw = files = parts[10]
        if files.strip(b"\x00\n"):  # (a log without --name-status has none)
            rc.files = _parse_name_status(files)
    return rc


class LazyCommits:
    """Commits of a `git log` output indexed by sha; each parsed on first access."""

    def __init__(self, data: bytes) -> None:
        self._chunks: dict[str, bytes] = {}
        self._index(data.split(b"\x1e"))
        self._parsed: dict[str, RawCommit] = {}

    def _index(self, chunks: Iterable[bytes]) -> None:
        put = self._chunks.__setitem__
        for chunk in chunks:
            i = chunk.find(b"\x00")
            if i >= 0:  # SHA-1 or SHA-256 object names alike
                put(chunk[:i].decode().strip(), chunk)

    def __contains__(self, sha: object) -> bool:
        return sha in self._chunks

    def get(self, sha: str) -> RawCommit:
        rc = self._parsed.get(sha)
        if rc is None:
            rc = _parse_chunk(self._chunks[sha])
            assert rc is not None
            self._parsed[sha] = rc
        return rc


class StreamedCommits(LazyCommits):
    """LazyCommits over a running `git log`, read only as far as a lookup needs.

    With ``--reverse`` the log comes oldest first, so the commits a merge brought in are
    read around the time the first-parent walk reaches that merge; a sha the log does not
    hold (outside the range) is known missing only at its end.
    """

    def __init__(self, stream: _GitStream) -> None:
        self._chunks = {}
        self._parsed = {}
        self._blocks: Iterator[bytes] | None = stream.blocks()
        self._rest = b""

    def _more(self) -> bool:
        if self._blocks is None:
            return False
        block = next(self._blocks, None)
        if block is None:
            self._blocks = None
            parts, self._rest = [self._rest], b""
        else:
            parts = (self._rest + block).split(b"\x1e")
            self._rest = parts.pop()
        self._index(parts)
        return True

    def __contains__(self, sha: object) -> bool:
        while sha not in self._chunks:
            if not self._more():
                return False
        return True

    def finish(self) -> None:
        """Read to the end, so a failure of git is reported even if no lookup needed it."""
        if self._blocks is not None:
            for _ in self._blocks:
                pass
            self._blocks = None


def _parse_name_status(data: bytes) -> list[FileChange]:
    if data.startswith(b"\x00\n"):
        data = data[2:]  # the separator after the header (an empty token, skipped below)
    # one decode, then split: NUL is ASCII, so the tokens are those of splitting first
    text = data.strip(b"\n").decode("utf-8", "replace")
    toks = text.split("\x00")
    if "\n" in text:
        toks = [t.strip("\n") for t in toks]
    out: list[FileChange] = []
    i, n = 0, len(toks)
    while i < n:
        code = toks[i]
        if not code:
            i += 1
            continue
        letter = code[0]
        if letter in ("R", "C"):
            if i + 2 >= n:
                break
            old, new = toks[i + 1], toks[i + 2]
            out.append(FileChange(path=new, previous_path=old, status=STATUS[letter]))  # type: ignore[arg-type]
            i += 3
        elif letter in STATUS:
            out.append(FileChange(path=toks[i + 1], status=STATUS[letter]))  # type: ignore[arg-type]
            i += 2
        else:
            i += 1
    return out


@lru_cache(maxsize=4096)
def _actor(name: str, email: str) -> Actor:
    # cached: a history has few people, and an Actor is immutable and validated once
    login = None
    low = email.lower()
    if low.endswith("@users.noreply.github.com"):
        login = low.split("@", 1)[0].split("+", 1)[-1]
    kind = "bot" if (login or "").endswith("[bot]") or name.endswith("[bot]") else "user"
    return Actor(login=login, name=name or None, email=email or None, type=kind)  # type: ignore[arg-type]


def _co_authors(message: str) -> tuple[Actor, ...]:
    if "co-authored-by" not in message.lower():
        return ()  # most commits have none: skip the regex
    return tuple(_actor(n, e) for n, e in COAUTHOR_RE.findall(message))


def _commit_info(rc: RawCommit) -> CommitInfo:
    return CommitInfo(
        sha=rc.sha,
        parents=rc.parents,
        author=_actor(rc.author_name, rc.author_email),
        committer=_actor(rc.committer_name, rc.committer_email),
        authored_at=rc.authored_at,
        committed_at=rc.committed_at,
        message=rc.message,
        co_authors=_co_authors(rc.message),
        signature=rc.sig,  # type: ignore[arg-type]
    )


def _is_web_flow(rc: RawCommit) -> bool:
    return rc.committer_email.lower() == "noreply@github.com"


@dataclass
class GitCollectResult:
    repo: str
    branch: str
    commits: int
    changes: int
    direct_pushes: int
    tip: str
    incremental: bool
    rewritten: bool = False
    notes: list[str] = field(default_factory=list)


class GitSource:
    """Collect one local repository's controlled branches. Judges nothing."""

    name = "git"
    capabilities = frozenset({"history", "attribution", "files", "commits"})

    def __init__(self, path: Path, settings: Settings, *, repo: str | None = None) -> None:
        self.path = path
        self.settings = settings
        self._check_repo()
        self.repo = repo or self._repo_name()

    # --- validation ------------------------------------------------------------------------

    def _check_repo(self) -> None:
        if not self.path.exists():
            raise SourceError(
                f"{self.path} does not exist",
                expected="the path of a local git repository",
                hint="check the path, or clone the repository first",
            )
        proc = subprocess.run(
            ["git", "-C", str(self.path), "rev-parse", "--git-dir"],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SourceError(
                f"{self.path} is not a git repository",
                expected="a folder inside a git working tree or a bare repository",
                hint="pass the repository's path, e.g. `changeproof collect git ~/src/app`",
            )
        shallow = _run_git(self.path, ["rev-parse", "--is-shallow-repository"]).strip()
        if shallow == b"true":
            raise SourceError(
                f"{self.path} is a shallow clone: its history is cut off, so changes before the "
                "cut cannot be attributed and the population would be incomplete",
                expected="a clone with full history",
                hint="run `git -C "
                + str(self.path)
                + " fetch --unshallow` (in GitHub Actions: actions/checkout with fetch-depth: 0)",
            )

    def _repo_name(self) -> str:
        for r in self.settings.repositories:
            if r.path and Path(r.path).absolute().resolve() == self.path.absolute().resolve():
                return r.name
        proc = subprocess.run(
            ["git", "-C", str(self.path), "config", "--get", "remote.origin.url"],
            capture_output=True,
            check=False,
        )
        url = proc.stdout.decode().strip()
        if url:
            m = re.search(r"[:/]([^/:]+/[^/]+?)(?:\.git)?/?$", url)
            if m:
                return m.group(1)
        top = _run_git(self.path, ["rev-parse", "--show-toplevel"], check_msg=None).decode().strip()
        return Path(top).name

    def branches(self, explicit: list[str] | None) -> list[str]:
        refs = (
            _run_git(
                self.path, ["for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes"]
            )
            .decode()
            .split()
        )
        local = [r[len("refs/heads/") :] for r in refs if r.startswith("refs/heads/")]
        if explicit:
            for b in explicit:
                if self._resolve(b) is None:
                    raise SourceError(
                        f"branch {b!r} does not exist in {self.path}",
                        expected="a local branch or a remote-tracking branch (origin/NAME)",
                        hint="list branches with `git -C " + str(self.path) + " branch -a`",
                    )
            return explicit
        chosen = [b for b in local if self.settings.is_controlled(self.repo, b)]
        if not chosen:
            raise SourceError(
                f"none of the controlled branches {list(self.settings.controlled_branches)} "
                f"exists in {self.path} (local branches: {', '.join(local) or 'none'})",
                expected="at least one controlled branch",
                hint="pass --branch NAME, or set controlled_branches in changeproof.toml",
            )
        return chosen

    def _resolve(self, branch: str) -> str | None:
        for ref in (
            f"refs/heads/{branch}",
            f"refs/remotes/{branch}",
            f"refs/remotes/origin/{branch}",
        ):
            proc = subprocess.run(
                [
                    "git",
                    "-C",
                    str(self.path),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    ref + "^{commit}",
                ],
                capture_output=True,
                check=False,
            )
            if proc.returncode == 0:
                return proc.stdout.decode().strip()
        return None

    def _is_ancestor(self, a: str, b: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", str(self.path), "merge-base", "--is-ancestor", a, b],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    # --- collection -------------------------------------------------------------------------

    def collect_branch(
        self,
        store: Store,
        w: Writer,
        branch: str,
        *,
        since: datetime | None,
        now: datetime,
        progress: Callable[[int], None] | None = None,
    ) -> GitCollectResult:
        tip = self._resolve(branch)
        if tip is None:
            raise SourceError(f"branch {branch!r} does not exist in {self.path}")
        scope = f"{self.repo}:{branch}"
        cursor = store.cursor("git", scope)
        rewritten = False
        notes: list[str] = []
        rng = [tip]
        if cursor:
            if cursor == tip:
                return GitCollectResult(self.repo, branch, 0, 0, 0, tip, True)
            if self._is_ancestor(cursor, tip):
                rng = [tip, f"^{cursor}"]
            else:
                rewritten = True
                notes.append(
                    f"history of {branch} was rewritten: the previously collected tip "
                    f"{cursor[:12]} is no longer on the branch"
                )
        since_args = [f"--since={since.isoformat()}"] if since else []
        # Oldest first, parsed and stored while git computes the diffs of the commits after
        # (--reverse costs git only the cheap walk up front). The all-commits log runs
        # alongside and is read only as far as the merges reached so far need.
        fp_args = [
            "log", "--reverse", "--first-parent", "--diff-merges=first-parent", "--name-status",
            "-M", "-z", f"--format={FORMAT}", *since_args, *rng, "--",
        ]  # fmt: skip
        with contextlib.ExitStack() as stack:
            stream = stack.enter_context(_GitStream(self.path, fp_args))

            def all_commits(*bound: str) -> StreamedCommits:
                args = ["log", "--reverse", f"--format={FORMAT}", *rng, *bound, "--"]
                return StreamedCommits(stack.enter_context(_GitStream(self.path, args)))

            # With --since, what merges brought in stops where the first-parent history before
            # the cut does: the all-commits log then leaves out what the parent of the first
            # commit kept reaches (it starts once the walk names that commit).
            universe = all_commits() if since is None else None
            stack.enter_context(w.pipelined())  # batches are stored on a second core meanwhile
            # (these queries run while git walks the history)
            platform = self.settings.platform_of(self.repo)
            existing = self._existing_numbers(store)
            seq0 = self._next_seq(store, branch)
            # first-parent commits read so far: a merge's other parents never reach a later
            # one (it would be its own ancestor), so this stops its walk as the full set would
            merged: set[str] = set()
            n = changes = direct = 0

            def land(group: list[RawCommit]) -> None:
                nonlocal changes, direct
                assert universe is not None
                introduced = (
                    self._introduced(group[-1], universe, merged)
                    if len(group[-1].parents) > 1
                    else []
                )
                parts = [b"\x00".join((c.raw, c.files_raw)) for c in group]
                parts.extend(c.raw for c in introduced)
                payload = b"".join(parts)
                raw_sha = sha256_bytes(payload)  # once, for the locker and the provenance
                change = self._to_change(
                    group, introduced, branch, platform, now, existing, raw_sha
                )
                w.put_raw(payload, kind="git.commits", source="git", sha256=raw_sha)
                w.put(change, seq=(seq0 + changes) * 1000)
                changes += 1
                if change.change_type == "direct_push":
                    direct += 1
                if progress is not None:
                    progress(len(group))

            group: list[RawCommit] = []
            run = False  # may the group grow: a rebase merge's run of web-flow commits
            for chunk in stream.chunks():
                rc = _parse_chunk(chunk)
                if rc is None or (since is not None and rc.committed_at < since):
                    continue
                if universe is None:
                    universe = all_commits(*(f"^{p}" for p in rc.parents[:1]))
                n += 1
                merged.add(rc.sha)
                single = len(rc.parents) == 1
                if (
                    run
                    and single
                    and _is_web_flow(rc)
                    and rc.committed_at == group[0].committed_at
                    and not self._marker(rc, platform)
                ):
                    group.append(rc)
                    continue
                if group:
                    land(group)
                group = [rc]
                # a rebase merge: consecutive single-parent commits web-flow committed at once
                run = single and _is_web_flow(rc) and not self._marker(rc, platform)
            if group:
                land(group)
            if universe is not None:
                universe.finish()
        w.set_cursor("git", scope, tip)
        cov_raw = (
            f"git {self.repo} {branch} {tip} since={since.isoformat() if since else '-'}".encode()
        )
        raw_sha = w.put_raw(cov_raw, kind="git.coverage", source="git")
        w.put(
            Coverage(
                id=f"git:{self.repo}:{branch}:{tip}",
                source="git",
                repo=self.repo,
                branch=branch,
                start=since,
                end=now,
                complete=True,
                gaps=tuple(notes),
                provenance=Provenance(
                    source="git", occurred_at=now, collected_at=now, raw_sha256=raw_sha
                ),
            )
        )
        return GitCollectResult(
            self.repo, branch, n, changes, direct, tip, cursor is not None, rewritten, notes
        )

    def _next_seq(self, store: Store, branch: str) -> int:
        import sqlalchemy as sa

        from changeproof.store import schema

        ci = schema.commit_index
        with store.connect() as conn:
            v = conn.execute(
                sa.select(sa.func.max(ci.c.seq)).where(
                    ci.c.repo == self.repo, ci.c.branch == branch
                )
            ).scalar()
        return 0 if v is None else int(v) // 1000 + 1

    def _existing_numbers(self, store: Store) -> dict[int, set[str]]:
        """PR numbers already attributed in this repository (number → its landed commits)."""
        import sqlalchemy as sa

        from changeproof.store import schema

        ci = schema.commit_index
        prefix = f"{self.repo}#"
        out: dict[int, set[str]] = {}
        with store.connect() as conn:
            for key, sha in conn.execute(
                sa.select(ci.c.change_key, ci.c.sha).where(
                    ci.c.repo == self.repo, ci.c.change_key.startswith(prefix)
                )
            ):
                try:
                    out.setdefault(int(key[len(prefix) :]), set()).add(sha)
                except ValueError:
                    continue
        return out

    def _marker(self, rc: RawCommit, platform: str) -> bool:
        return bool(
            GITHUB_MERGE_RE.match(rc.subject)
            or GITLAB_MR_RE.search(rc.message)
            or SQUASH_RE.search(rc.subject)
            or REVIEWED_ON_RE.search(rc.message)
        )

    def _introduced(
        self, merge: RawCommit, universe: LazyCommits, merged: set[str]
    ) -> list[RawCommit]:
        """Commits a merge brought in: reachable from its other parents, not already merged."""
        out: list[RawCommit] = []
        stack = list(merge.parents[1:])
        while stack:
            sha = stack.pop()
            if sha in merged or sha not in universe:
                continue
            merged.add(sha)
            rc = universe.get(sha)
            out.append(rc)
            stack.extend(rc.parents)
        out.sort(key=lambda c: c.committed_at)
        return out

    def _to_change(
        self,
        group: list[RawCommit],
        introduced: list[RawCommit],
        branch: str,
        platform: str,
        now: datetime,
        existing: dict[int, set[str]],
        raw_sha: str,
    ) -> Change:
        head = group[-1]
        msg = head.message
        parents = head.parents
        n_parents = len(parents)
        number: int | None = None
        ctype = "direct_push"
        method = "unknown"
        reviews: tuple[Review, ...] | None = None
        head_sha: str | None = None
        base_sha = group[0].parents[0] if group[0].parents else None
        # a merge's commits are those it introduced (possibly none); otherwise the group's
        chosen = introduced if introduced or n_parents > 1 else group
        commits = [_commit_info(c) for c in chosen]
        subject = head.subject
        # the attribution rules in order, each pattern tried only where it can decide
        # (the literal checks are exact prefilters of their patterns)
        m_gh = GITHUB_MERGE_RE.match(subject) if n_parents > 1 else None
        m_gl = GITLAB_MR_RE.search(msg) if m_gh is None and "See merge request " in msg else None
        if not n_parents:
            ctype = "initial"
        elif m_gh is not None:
            number, ctype, method = int(m_gh.group(1)), "merge", "merge"
            head_sha = parents[1]
        elif m_gl is not None and n_parents > 1:
            number, ctype, method = int(m_gl.group(2)), "merge", "merge"
            head_sha = parents[1]
        elif m_gl is not None and n_parents == 1:
            number, ctype, method = int(m_gl.group(2)), "squash", "squash"
            head_sha = head.sha
        elif n_parents == 1 and (m_sq := SQUASH_RE.search(subject)) is not None:
            number, ctype, method = int(m_sq.group(1)), "squash", "squash"
            head_sha = head.sha
        elif (m_ge := REVIEWED_ON_RE.search(msg)) is not None:
            ctype, method = "gerrit", "fast_forward"
            g = GERRIT_NUM_RE.search(m_ge.group(1).rstrip("/"))
            number = int(g.group(1)) if g else None
            head_sha = head.sha
            if platform == "gerrit":
                reviews = tuple(
                    Review(
                        reviewer=_actor(n, e),
                        state="APPROVED",
                        submitted_at=head.committed_at,
                        commit_sha=head.sha,
                        source="gerrit-trailer",
                    )
                    for n, e in REVIEWED_BY_RE.findall(msg)
                )
        elif len(group) > 1:
            ctype, method = "rebase", "rebase"
            head_sha = head.sha
        notes = ""
        if number is not None and number in existing and head.sha not in existing[number]:
            # a PR merges once: a second commit claiming the same number is not that PR
            notes = f"claims #{number}, which an earlier commit already landed"
            number, ctype, method, head_sha, reviews = None, "direct_push", "unknown", None, None
        landed = tuple(c.sha for c in group)
        if number is not None:
            existing.setdefault(number, set()).update(landed)
        if len(group) == 1 and len(head.files) < 2:
            files = tuple(head.files)  # (no path twice: nothing to merge)
        else:
            by_path: dict[str, FileChange] = {}
            for c in group:
                for f in c.files:
                    by_path[f.path] = f
            files = tuple(by_path.values())
        found = TICKET_DEFAULT.findall(msg)
        tickets = tuple(sorted(set(found))) if found else ()
        rev = REVERT_RE.search(msg) if "This reverts commit " in msg else None
        merged_by = _actor(head.committer_name, head.committer_email)
        body = msg.split("\n", 1)[1].strip() if "\n" in msg else ""
        return Change(
            repo=self.repo,
            branch=branch,
            number=number,
            change_type=ctype,  # type: ignore[arg-type]
            platform="gerrit" if ctype == "gerrit" and platform == "gerrit" else "git",
            merged_at=head.committed_at,
            merge_sha=head.sha,
            landed_shas=landed,
            base_sha=base_sha,
            head_sha=head_sha,
            title=subject,
            body=body + f"\n[{notes}]" if notes else body,
            author=_actor(head.author_name, head.author_email) if ctype != "merge" else None,
            merged_by=merged_by,
            merge_method=method,  # type: ignore[arg-type]
            commits=tuple(commits),
            reviews=reviews,
            files=files,
            files_total=len(files),
            tickets=tickets,
            reverts=rev.group(1) if rev else None,
            provenance=Provenance(
                source="git",
                occurred_at=head.committed_at,
                collected_at=now,
                raw_sha256=raw_sha,
            ),
        )
