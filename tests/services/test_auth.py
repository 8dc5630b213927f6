"""API keys: verified with scrypt once, then by digest, while the stored record agrees."""

from __future__ import annotations

from collections.abc import Iterator
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


def test_a_key_is_hashed_with_scrypt_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    calls: list[str] = []
    real = auth._hash

    def counting(secret: str, salt: bytes | None = None) -> str:
        calls.append(secret)
        return real(secret, salt)

    monkeypatch.setattr(auth, "_hash", counting)
    for _ in range(50):
        assert runtime.auth.from_api_key(issued.api_key).client_id == issued.client_id
    assert len(calls) == 1
    with pytest.raises(AuthenticationError, match="wrong client credentials"):
        runtime.auth.from_api_key(issued.api_key[:-1] + ("x" if issued.api_key[-1] != "x" else "y"))


def test_a_changed_stored_hash_makes_a_proven_key_prove_itself_again(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    runtime.auth.from_api_key(issued.api_key)
    # another process rotates the secret: the record's hash changes under the cache
    record = runtime.backend.clients.client(issued.client_id)
    runtime.backend.clients.save_client(
        record.model_copy(update={"secret_hash": auth._hash("a new secret")})
    )
    monkeypatch.setattr(auth, "_CACHE_S", 0.0)  # the record is re-read now, not in 5 s
    with pytest.raises(AuthenticationError, match="wrong client credentials"):
        runtime.auth.from_api_key(issued.api_key)


def test_revocation_stops_a_proven_key(runtime: Runtime) -> None:
    issued = runtime.auth.create_client("acme", ["read:bars"])
    runtime.auth.from_api_key(issued.api_key)
    runtime.auth.revoke(issued.client_id)
    with pytest.raises(AuthenticationError):
        runtime.auth.from_api_key(issued.api_key)
