"""API keys: verified with scrypt once, then by digest, while the stored record agrees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from quantivista.config import Settings
from quantivista.errors import AuthenticationError
from quantivista.runtime import Runtime
from quantivista.services import auth


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(Settings(data_dir=tmp_path / "qv")) as opened:
        yield opened


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The secrets hashed with scrypt from now on, in order."""
    calls: list[str] = []
    real = auth._hash

    def counting(secret: str, salt: bytes | None = None) -> str:
        calls.append(secret)
        return real(secret, salt)

    monkeypatch.setattr(auth, "_hash", counting)
    return calls


def _change_secret_in_store(runtime: Runtime, client_id: str) -> None:
    """Change a client's stored secret hash, as another process rotating it does."""
    record = runtime.backend.clients.client(client_id)
    runtime.backend.clients.save_client(
        record.model_copy(update={"secret_hash": auth._hash("a new secret")})
    )


def test_a_key_is_hashed_with_scrypt_once(runtime: Runtime, hashed: list[str]) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    hashed.clear()  # the hash made on creation
    for _ in range(50):
        assert runtime.auth.from_api_key(issued.api_key).client_id == issued.client_id
    assert len(hashed) == 1
    with pytest.raises(AuthenticationError, match="wrong client credentials"):
        runtime.auth.from_api_key(issued.api_key[:-1] + ("x" if issued.api_key[-1] != "x" else "y"))


def test_a_changed_stored_hash_makes_a_proven_key_prove_itself_again(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    runtime.auth.from_api_key(issued.api_key)
    # another process rotates the secret: the record's hash changes under the cache
    _change_secret_in_store(runtime, issued.client_id)
    monkeypatch.setattr(auth, "_CACHE_S", 0.0)  # the record is re-read now, not in 5 s
    with pytest.raises(AuthenticationError, match="wrong client credentials"):
        runtime.auth.from_api_key(issued.api_key)


def test_revocation_stops_a_proven_key(runtime: Runtime) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    runtime.auth.from_api_key(issued.api_key)
    runtime.auth.revoke(issued.client_id)
    with pytest.raises(AuthenticationError):
        runtime.auth.from_api_key(issued.api_key)


def test_a_proven_token_is_checked_once_and_still_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    import jwt

    from quantivista.clock import TestClock

    clock = TestClock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    with Runtime(Settings(data_dir=tmp_path / "qv"), clock=clock) as runtime:
        issued = runtime.auth.create_client("acme", ["read:bars"])
        token = runtime.auth.token(issued.client_id, issued.client_secret)
        decoded: list[str] = []
        real = jwt.decode

        def counting(*args: object, **kwargs: object) -> object:
            decoded.append("x")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(jwt, "decode", counting)
        for _ in range(20):
            assert runtime.auth.from_token(token.access_token).tenant == "acme"
        assert len(decoded) == 1  # then remembered, like a proven API key
        clock.advance(token.expires_in)
        with pytest.raises(AuthenticationError, match="expired"):
            runtime.auth.from_token(token.access_token)


def test_a_remembered_key_lasts_no_longer_than_its_client_record(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    assert runtime.auth.from_api_key(issued.api_key).client_id == issued.client_id
    # another process revokes it (straight in the store: this process's caches do not know)
    record = runtime.backend.clients.client(issued.client_id)
    runtime.backend.clients.save_client(
        record.model_copy(update={"revoked_at": runtime.clock.now()})
    )
    assert runtime.auth.from_api_key(issued.api_key).client_id == issued.client_id  # < 5 s
    monkeypatch.setattr(auth, "_CACHE_S", 0.0)  # the record is due now
    with pytest.raises(AuthenticationError, match="revoked"):
        runtime.auth.from_api_key(issued.api_key)


def test_a_key_needs_proof_until_proven_and_again_after_its_secret_changes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    assert runtime.auth.needs_proof(issued.api_key)
    runtime.auth.from_api_key(issued.api_key)
    assert not runtime.auth.needs_proof(issued.api_key)
    assert runtime.auth.needs_proof(issued.api_key + "0")  # another key: never proven
    _change_secret_in_store(runtime, issued.client_id)
    monkeypatch.setattr(auth, "_CACHE_S", 0.0)  # the record is re-read now, not in 5 s
    with pytest.raises(AuthenticationError):
        runtime.auth.from_api_key(issued.api_key)
    assert runtime.auth.needs_proof(issued.api_key)  # proven against a hash now gone


def test_requests_that_bring_a_new_key_together_hash_it_once(
    runtime: Runtime, hashed: list[str]
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    hashed.clear()  # the hash made on creation
    start = threading.Barrier(8)

    def first_request() -> str:
        start.wait()
        return runtime.auth.from_api_key(issued.api_key).client_id

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: first_request(), range(8)))
    assert got == [issued.client_id] * 8
    assert len(hashed) == 1  # the others waited for the first proof
