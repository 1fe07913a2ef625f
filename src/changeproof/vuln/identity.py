"""Finding identity: the same problem in the same place, whatever the version or the score.

Identity = (repository, category, target, ecosystem, package, advisory with its aliases).
The installed version, the severity and the line number are **not** part of it: DefectDojo
keys Grype/pip-audit findings by version and Trivy/npm/OSV ones by severity, so a still-
vulnerable bump or a rescored advisory restarts the clock. Here they do not.

Aliases join across scanners: pip-audit's PYSEC id, OSV's GHSA and Trivy's CVE for the same
package are one finding when any alias overlaps (union-find over alias sets).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

_ECOSYSTEMS = {
    "pypi": "pypi",
    "pip": "pypi",
    "python": "pypi",
    "poetry": "pypi",
    "pipenv": "pypi",
    "npm": "npm",
    "yarn": "npm",
    "pnpm": "npm",
    "node": "npm",
    "javascript": "npm",
    "maven": "maven",
    "gradle": "maven",
    "java": "maven",
    "jar": "maven",
    "java-archive": "maven",
    "go": "go",
    "gomod": "go",
    "golang": "go",
    "go-module": "go",
    "crates.io": "cargo",
    "cargo": "cargo",
    "rust": "cargo",
    "rust-crate": "cargo",
    "nuget": "nuget",
    "dotnet": "nuget",
    "packagist": "composer",
    "composer": "composer",
    "php-composer": "composer",
    "rubygems": "rubygems",
    "gem": "rubygems",
    "bundler": "rubygems",
    "deb": "deb",
    "debian": "deb",
    "ubuntu": "deb",
    "dpkg": "deb",
    "rpm": "rpm",
    "redhat": "rpm",
    "centos": "rpm",
    "rocky": "rpm",
    "alma": "rpm",
    "amazon": "rpm",
    "oracle": "rpm",
    "suse": "rpm",
    "sles": "rpm",
    "apk": "apk",
    "alpine": "apk",
    "wolfi": "apk",
    "chainguard": "apk",
    "hex": "hex",
    "pub": "pub",
    "swift": "swift",
    "cocoapods": "cocoapods",
}

# Lockfiles and manifests per ecosystem: a change touching one of these can be the fix.
MANIFESTS: dict[str, tuple[str, ...]] = {
    "pypi": (
        "requirements*.txt",
        "requirements/*.txt",
        "*.in",
        "Pipfile",
        "Pipfile.lock",
        "pyproject.toml",
        "poetry.lock",
        "uv.lock",
        "pdm.lock",
        "setup.py",
        "setup.cfg",
    ),
    "npm": (
        "package.json",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
    ),
    "maven": ("pom.xml", "build.gradle", "build.gradle.kts", "gradle.lockfile", "*.versions.toml"),
    "go": ("go.mod", "go.sum"),
    "cargo": ("Cargo.toml", "Cargo.lock"),
    "nuget": ("*.csproj", "packages.config", "packages.lock.json", "Directory.Packages.props"),
    "composer": ("composer.json", "composer.lock"),
    "rubygems": ("Gemfile", "Gemfile.lock", "*.gemspec"),
    "deb": ("Dockerfile", "*.Dockerfile", "Containerfile"),
    "rpm": ("Dockerfile", "*.Dockerfile", "Containerfile"),
    "apk": ("Dockerfile", "*.Dockerfile", "Containerfile"),
    "hex": ("mix.exs", "mix.lock"),
    "pub": ("pubspec.yaml", "pubspec.lock"),
}


@lru_cache(maxsize=4096)
def norm_ecosystem(value: str | None) -> str:
    if not value:
        return ""
    low = value.strip().lower()
    base = re.split(r"[:/ ]", low, maxsplit=1)[0]  # "Debian:10" → debian, "sles:15.3" → sles
    return _ECOSYSTEMS.get(low, _ECOSYSTEMS.get(base, base))


@lru_cache(maxsize=65536)
def norm_package(name: str, ecosystem: str) -> str:
    n = name.strip()
    if ecosystem == "pypi":
        return re.sub(r"[-_.]+", "-", n).lower()  # PEP 503
    if ecosystem in ("npm", "go", "cargo"):
        return n  # case-sensitive registries
    return n.lower()


_IMAGE_TAG = re.compile(r"^(?P<name>[^@\s]+?)(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


@lru_cache(maxsize=4096)
def norm_target(target: str, *, image: bool = False) -> str:
    """A scan target without what changes every release: an image's tag and digest, the
    " (alpine 3.14.0)" Trivy appends, and the temp-dir prefixes CI runners add."""
    t = target.strip()
    t = re.sub(r"\s+\([^)]*\)$", "", t)  # Trivy "image:tag (debian 10.4)"
    if image:
        m = _IMAGE_TAG.match(t)
        if m:
            t = m.group("name")
    t = t.replace("\\", "/")
    return re.sub(r"^(?:\./)+", "", t)


def canonical_id(ids: Iterable[str]) -> str:
    """The preferred name of an advisory: a CVE, else a GHSA, else the native id (sorted, so
    the choice is stable)."""
    allids = sorted({i.strip() for i in ids if i and i.strip()})
    for prefix in ("CVE-", "GHSA-"):
        hits = [i for i in allids if i.upper().startswith(prefix)]
        if hits:
            return hits[0]
    return allids[0] if allids else ""


def finding_key(
    repo: str, category: str, target: str, ecosystem: str, package: str, cid: str
) -> str:
    """A short, stable id for a finding, shown on the patch board (``F-`` + 12 hex)."""
    h = hashlib.sha256("\x1f".join((repo, category, target, ecosystem, package, cid)).encode())
    return "F-" + h.hexdigest()[:12]


class AliasJoiner:
    """Union-find over advisory ids: ids reported together are the same advisory."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        p = self.parent.setdefault(x, x)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[x] = p
        return p

    def join(self, ids: Iterable[str]) -> str:
        it = iter(ids)
        first = next(it)
        root = self.find(first)
        for other in it:
            r = self.find(other)
            if r != root:
                self.parent[r] = root
        return root
