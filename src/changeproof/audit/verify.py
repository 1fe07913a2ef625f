"""Verify an audit package offline, with nothing but the package (a folder or its zip).

Checks, naming every problem: the manifest's ed25519 signature (and, when the auditor pins
one, that the package's key is the pinned key); the SHA256SUMS signature and its agreement
with the manifest; every listed file present with its SHA-256 and size; no unlisted file.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from changeproof.audit.package import (
    MANIFEST,
    MANIFEST_SIG,
    PACKAGE_FORMAT,
    PUBLIC_KEY,
    SUMS,
    SUMS_SIG,
    UNLISTED,
)
from changeproof.errors import UsageError
from changeproof.locker import verify_signature


@dataclass
class PackageReport:
    path: str
    files: int = 0
    fingerprint: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "intact": self.ok,
            "package": self.path,
            "files": self.files,
            "public_key_fingerprint": self.fingerprint,
            "problems": self.problems,
            "first_problem": self.problems[0] if self.problems else None,
        }


class _Reader:
    """Uniform access to a package folder or zip: relative path → bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise UsageError(
                    f"{path} is neither a folder nor a zip file",
                    expected="an audit package folder made by `changeproof audit`, or its .zip",
                ) from None
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) == 1 and all("/" in n for n in names):
                self._prefix = tops.pop() + "/"
        elif not path.is_dir():
            raise UsageError(
                f"{path} does not exist",
                expected="an audit package folder made by `changeproof audit`, or its .zip",
            )

    def names(self) -> Iterator[str]:
        if self._zip is not None:
            for n in self._zip.namelist():
                if not n.endswith("/"):
                    yield n[len(self._prefix) :] if n.startswith(self._prefix) else n
            return
        for p in sorted(self.path.rglob("*")):
            if p.is_file() or p.is_symlink():
                yield p.relative_to(self.path).as_posix()

    def read(self, rel: str) -> bytes | None:
        if self._zip is not None:
            try:
                return self._zip.read(self._prefix + rel)
            except KeyError:
                return None
        p = self.path / rel
        if p.is_symlink() or not p.is_file():
            return None
        return p.read_bytes()

    def digest(self, rel: str) -> tuple[str, int] | None:
        if self._zip is not None:
            data = self.read(rel)
            return None if data is None else (hashlib.sha256(data).hexdigest(), len(data))
        p = self.path / rel
        if p.is_symlink() or not p.is_file():
            return None
        h = hashlib.sha256()
        n = 0
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _fingerprint(pem: bytes) -> str | None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except ValueError:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _signature_ok(pem: bytes, message: bytes, sig: bytes | None) -> bool:
    if sig is None:
        return False
    return verify_signature(pem, message, base64.b64encode(sig).decode())


def verify_package(path: Path, *, trusted_key: bytes | None = None) -> PackageReport:
    """Check a package; every problem is named in the report (nothing is raised for tampering)."""
    rep = PackageReport(str(path))
    reader = _Reader(path)
    try:
        _verify(reader, rep, trusted_key)
    finally:
        reader.close()
    return rep


def _verify(reader: _Reader, rep: PackageReport, trusted_key: bytes | None) -> None:
    manifest_bytes = reader.read(MANIFEST)
    if manifest_bytes is None:
        raise UsageError(
            f"{rep.path} has no {MANIFEST}: it is not an audit package (or the manifest was removed)",
            expected="a folder or zip made by `changeproof audit`",
        )
    pem = reader.read(PUBLIC_KEY)
    if pem is None:
        rep.problems.append(f"{PUBLIC_KEY}: missing, so no signature can be checked")
        pem = b""
    fp = _fingerprint(pem) if pem else None
    rep.fingerprint = fp
    if pem and fp is None:
        rep.problems.append(f"{PUBLIC_KEY}: not an ed25519 public key (changed)")
    if trusted_key is not None:
        want = _fingerprint(trusted_key)
        if want is None:
            raise UsageError(
                "the --public-key file is not an ed25519 public key in PEM form",
                hint="export the organisation's key with `changeproof key export`",
            )
        if fp != want:
            rep.problems.append(
                f"{PUBLIC_KEY}: the package was signed with key {fp or 'unknown'}, not the pinned key {want}"
            )
    key = trusted_key if trusted_key is not None else pem
    if fp is not None and not _signature_ok(key, manifest_bytes, reader.read(MANIFEST_SIG)):
        rep.problems.append(
            f"{MANIFEST}: bad signature — the manifest or {MANIFEST_SIG} was changed, or it was signed with another key"
        )
    try:
        manifest = msgspec.json.decode(manifest_bytes)
        listed = {str(f["path"]): (str(f["sha256"]), int(f["size"])) for f in manifest["files"]}
        if manifest.get("format") != PACKAGE_FORMAT:
            rep.problems.append(f"{MANIFEST}: unknown package format {manifest.get('format')!r}")
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        rep.problems.append(f"{MANIFEST}: not a valid manifest (changed or corrupt)")
        return
    rep.files = len(listed)
    for rel in [r for r in listed if r.startswith("/") or ".." in r.split("/") or "\\" in r]:
        rep.problems.append(f"{rel}: a manifest path outside the package (refused)")
        del listed[rel]
    # SHA256SUMS: its own signature, and the same digests as the manifest
    sums = reader.read(SUMS)
    if sums is not None and fp is not None and not _signature_ok(key, sums, reader.read(SUMS_SIG)):
        rep.problems.append(f"{SUMS}: bad signature — the checksum list or {SUMS_SIG} was changed")
    if sums is not None:
        for line in sums.decode("utf-8", "replace").splitlines():
            h, _, rel = line.partition("  ")
            if rel in listed and listed[rel][0] != h:
                rep.problems.append(f"{SUMS}: lists {rel} with a different SHA-256 than {MANIFEST}")
    present = set(reader.names())
    for rel, (h, size) in sorted(listed.items()):
        got = reader.digest(rel)
        if got is None:
            rep.problems.append(f"{rel}: missing (listed in the manifest)")
        elif got[0] != h or got[1] != size:
            rep.problems.append(f"{rel}: changed (SHA-256 {got[0][:16]}…, manifest says {h[:16]}…)")
    for rel in sorted(present - set(listed) - UNLISTED):
        rep.problems.append(f"{rel}: added (not in the manifest)")
    if fp is not None:
        _check_evidence(reader, rep, listed, key)


def _check_evidence(
    reader: _Reader, rep: PackageReport, listed: dict[str, tuple[str, int]], key: bytes
) -> None:
    """Evidence files are content-addressed, and the locker segment re-derives and is signed."""
    from changeproof.locker import checkpoint_message, entry_hash, key_id

    for rel, (h, _size) in listed.items():
        if rel.startswith("evidence/raw/"):
            name = rel.rsplit("/", 1)[1]
        elif rel.startswith("evidence/records/") and rel.endswith(".json"):
            name = rel.rsplit("/", 1)[1][: -len(".json")]
        else:
            continue
        if name != h:
            rep.problems.append(f"{rel}: its content's SHA-256 is not the digest it is named by")
    seg_bytes = reader.read("evidence/locker-segment.json")
    if seg_bytes is None:
        return
    try:
        seg = msgspec.json.decode(seg_bytes)
        entries = seg.get("entries", [])
        for e in entries:
            want = entry_hash(
                int(e["seq"]),
                e["digest"],
                e["kind"],
                e["source"],
                int(e["recorded_us"]),
                e["prev_hash"],
            )
            if want != e["entry_hash"]:
                rep.problems.append(
                    f"evidence/locker-segment.json: chain entry #{e['seq']} does not re-derive"
                )
        cp = seg.get("checkpoint")
        if cp is not None:
            msg = checkpoint_message(int(cp["seq"]), cp["head_hash"], int(cp["signed_us"]))
            if cp.get("key_id") != key_id(key) or not verify_signature(key, msg, cp["signature"]):
                rep.problems.append(
                    "evidence/locker-segment.json: the locker checkpoint is not signed by the package key"
                )
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        rep.problems.append("evidence/locker-segment.json: not a valid locker segment")
