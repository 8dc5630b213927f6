"""The lake's bronze files: bodies at `<provider>/<sha[:2]>/<sha>`, written whole.

The behaviour every backend shares is in `contracts/test_raw.py`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantivista.providers.base import RawPayload
from quantivista.storage.lake.bronze import FileRawStore

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def payload(body: bytes, provider: str = "acme") -> RawPayload:
    return RawPayload(
        provider=provider, url="https://acme/x", status_code=200, body=body, received_at=AT
    )


@pytest.fixture
def store(tmp_path: Path) -> FileRawStore:
    return FileRawStore(tmp_path)


def test_bodies_are_files_named_by_their_digest(store: FileRawStore) -> None:
    body = b'{"bars": [1, 2, 3]}'
    store.save("job-1", [payload(body), payload(body)])
    digest = hashlib.sha256(body).hexdigest()
    assert (store.root / "acme" / digest[:2] / digest).read_bytes() == body
    assert len([p for p in (store.root / "acme").rglob("*") if p.is_file()]) == 1


def test_no_temporary_files_remain(store: FileRawStore) -> None:
    store.save("job-1", [payload(bytes([i])) for i in range(20)])
    store.save("job-2", [payload(bytes([i])) for i in range(20)])  # all known already
    assert list(store.root.rglob(".tmp-*")) == []


def test_saving_nothing_writes_no_manifest(store: FileRawStore) -> None:
    assert store.save("job-1", []) == 0
    assert not (store.root / "_manifest").exists()
