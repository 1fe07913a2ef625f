"""GitHub authentication: a personal/fine-grained token, or a GitHub App installation token.

A GitHub App signs a short JWT (RS256, ``cryptography``) with its private key, exchanges it for an
installation token (valid one hour) and the provider refreshes it five minutes before expiry.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import msgspec

from changeproof.errors import ConfigError, SourceError


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key_pem: bytes, *, now: float | None = None) -> str:
    """A GitHub App JWT: iat 60 s in the past (clock drift), expiry 9 minutes ahead (max 10)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the GitHub App private key cannot be read ({exc})",
            expected="the PEM file GitHub generated for the App (-----BEGIN RSA PRIVATE KEY-----)",
            hint="download a new private key in the App's settings and point "
            "[github] app_private_key_path at it",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            "the GitHub App private key is not an RSA key",
            expected="the RSA PEM file GitHub generated for the App",
        )
    t = int(now if now is not None else time.time())
    header = _b64url(msgspec.json.encode({"alg": "RS256", "typ": "JWT"}))
    payload = _b64url(msgspec.json.encode({"iat": t - 60, "exp": t + 540, "iss": str(app_id)}))
    signing_input = f"{header}.{payload}".encode()
    sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(sig)}"


def token_auth(token: str) -> Callable[[], str | None]:
    value = f"Bearer {token.strip()}"
    return lambda: value


class AppAuth:
    """Installation-token provider for a GitHub App; thread-safe, refreshes before expiry."""

    def __init__(
        self,
        api_url: str,
        app_id: str,
        private_key_pem: bytes,
        *,
        installation_id: str | None = None,
        org: str | None = None,
        repo: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.app_id = app_id
        self._pem = private_key_pem
        self.installation_id = installation_id
        self._org = org
        self._repo = repo
        self._transport = transport
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str | None:
        with self._lock:
            if self._token is None or self._clock() > self._expires - 300:
                self._refresh()
            return f"Bearer {self._token}"

    def _call(self, method: str, path: str) -> dict[str, object]:
        jwt = app_jwt(self.app_id, self._pem, now=self._clock())
        with httpx.Client(transport=self._transport, timeout=30) as c:
            r = c.request(
                method,
                self.api_url + path,
                headers={
                    "Authorization": f"Bearer {jwt}",
                    "Accept": "application/vnd.github+json",
                    "User-Agent": "changeproof",
                },
            )
        if r.status_code == 401:
            raise SourceError(
                f"GitHub rejected the App JWT for app {self.app_id} (HTTP 401)",
                expected="the App's id and its current private key",
                hint="check [github] app_id and app_private_key_path, and the server clock",
            )
        if r.status_code == 404:
            raise SourceError(
                f"the GitHub App {self.app_id} is not installed on "
                f"{self._repo or self._org or 'the target'} ({path})",
                expected="an installation of the App on the organisation or repository",
                hint="install the App (Settings → GitHub Apps → Install) with read access to "
                "contents, pull requests, checks, actions, deployments and administration",
            )
        if r.status_code >= 400:
            raise SourceError(f"GitHub App token exchange failed: HTTP {r.status_code}")
        try:
            data = msgspec.json.decode(r.content)
        except msgspec.DecodeError:
            raise SourceError(f"{self.api_url}{path} did not answer with JSON") from None
        if not isinstance(data, dict):
            raise SourceError(f"{self.api_url}{path} answered with unexpected JSON")
        return data

    def _refresh(self) -> None:
        if self.installation_id is None:
            if self._repo:
                found = self._call("GET", f"/repos/{self._repo}/installation")
            elif self._org:
                found = self._call("GET", f"/orgs/{self._org}/installation")
            else:
                raise ConfigError(
                    "a GitHub App needs an installation id, an organisation or a repository",
                    hint="set [github] app_installation_id, org or repos",
                )
            self.installation_id = str(found.get("id"))
        data = self._call("POST", f"/app/installations/{self.installation_id}/access_tokens")
        token = data.get("token")
        if not isinstance(token, str):
            raise SourceError("GitHub's installation token response has no token")
        self._token = token
        expires = data.get("expires_at")
        self._expires = (
            datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
            if isinstance(expires, str)
            else self._clock() + 3000
        )


def load_private_key(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the GitHub App private key {path} ({exc.strerror})",
            hint="set [github] app_private_key_path to the App's .pem file",
        ) from None
