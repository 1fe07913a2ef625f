"""GitHub App auth: RS256 JWT → installation token, refreshed before it expires."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from changeproof.errors import ConfigError, SourceError
from changeproof.sources.github.auth import AppAuth, app_jwt


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def test_jwt_is_rs256_signed_with_the_app_key(key: rsa.RSAPrivateKey) -> None:
    token = app_jwt("4242", pem(key), now=1_800_000_000)
    header, payload, sig = token.split(".")
    assert json.loads(_b64d(header)) == {"alg": "RS256", "typ": "JWT"}
    claims = json.loads(_b64d(payload))
    assert claims == {"iat": 1_800_000_000 - 60, "exp": 1_800_000_000 + 540, "iss": "4242"}
    key.public_key().verify(
        _b64d(sig), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_installation_token_exchange_and_refresh(key: rsa.RSAPrivateKey) -> None:
    calls: list[str] = []
    now = [1_800_000_000.0]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        jwt = request.headers["authorization"].removeprefix("Bearer ")
        h, p, s = jwt.split(".")
        key.public_key().verify(_b64d(s), f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
        if request.url.path == "/repos/acme/api/installation":
            return httpx.Response(200, json={"id": 77})
        n = len(calls)
        expires = "2027-01-15T09:00:00Z"
        return httpx.Response(201, json={"token": f"ghs_{n}", "expires_at": expires})

    auth = AppAuth(
        "https://api.github.com", "4242", pem(key), repo="acme/api",
        transport=httpx.MockTransport(handler), clock=lambda: now[0],
    )  # fmt: skip
    assert auth() == "Bearer ghs_2"
    assert auth() == "Bearer ghs_2"  # cached
    assert calls == ["GET /repos/acme/api/installation", "POST /app/installations/77/access_tokens"]
    now[0] = 1_800_000_000.0 + 10**8  # past expiry: refreshed
    assert auth() == "Bearer ghs_3"


def test_app_not_installed(key: rsa.RSAPrivateKey) -> None:
    auth = AppAuth(
        "https://api.github.com", "4242", pem(key), org="acme",
        transport=httpx.MockTransport(lambda r: httpx.Response(404, json={"message": "Not Found"})),
    )  # fmt: skip
    with pytest.raises(SourceError, match="not installed"):
        auth()


def test_bad_private_key() -> None:
    with pytest.raises(ConfigError, match="private key"):
        app_jwt("1", b"-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n")
