"""Bronze: raw payloads kept once, content-addressed, with a manifest per job."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantivista.errors import NotFoundError
from quantivista.providers.base import RawPayload
from quantivista.storage.lake.bronze import FileRawStore

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def payload(
    body: bytes, provider: str = "acme", url: str = "https://acme/x?apikey=***"
) -> RawPayload:
    return RawPayload(
        provider=provider,
        url=url,
        status_code=200,
        body=body,
        received_at=AT,
        content_type="application/json",
    )


@pytest.fixture
def store(tmp_path: Path) -> FileRawStore:
    return FileRawStore(tmp_path)


def test_save_writes_content_addressed_bodies(store: FileRawStore) -> None:
    body = b'{"bars": [1, 2, 3]}'
    assert store.save("job-1", [payload(body)]) == 1
    digest = hashlib.sha256(body).hexdigest()
    path = store.root / "acme" / digest[:2] / digest
    assert path.read_bytes() == body
    assert store.body(digest, "acme") == body


def test_manifest_describes_each_payload(store: FileRawStore) -> None:
    bodies = [b"one", b"two"]
    store.save("job-1", [payload(b) for b in bodies])
    manifest = store.manifest("job-1")
    assert manifest.height == 2
    row = manifest.row(0, named=True)
    digest = hashlib.sha256(b"one").hexdigest()
    assert row == {
        "job_id": "job-1",
        "provider": "acme",
        "url": "https://acme/x?apikey=***",
        "status_code": 200,
        "content_type": "application/json",
        "received_at": AT,
        "sha256": digest,
        "bytes": 3,
        "path": f"acme/{digest[:2]}/{digest}",
    }


def test_the_same_body_is_stored_once_but_listed_every_time(store: FileRawStore) -> None:
    body = b"same"
    assert store.save("job-1", [payload(body), payload(body)]) == 1
    assert store.save("job-2", [payload(body)]) == 0
    assert len([p for p in (store.root / "acme").rglob("*") if p.is_file()]) == 1
    assert store.manifest("job-1").height == 2
    assert store.manifest("job-2").height == 1
    assert store.manifest().height == 3


def test_providers_keep_separate_copies(store: FileRawStore) -> None:
    assert store.save("job-1", [payload(b"x", "acme"), payload(b"x", "other")]) == 2
    digest = hashlib.sha256(b"x").hexdigest()
    assert store.body(digest, "other") == b"x"


def test_saving_nothing_writes_no_manifest(store: FileRawStore) -> None:
    assert store.save("job-1", []) == 0
    assert store.manifest().is_empty()
    assert not (store.root / "_manifest").exists()


def test_manifest_of_unknown_job_is_empty_with_schema(store: FileRawStore) -> None:
    store.save("job-1", [payload(b"x")])
    empty = store.manifest("job-404")
    assert empty.is_empty()
    assert empty.columns == store.manifest("job-1").columns


def test_no_temporary_files_remain(store: FileRawStore) -> None:
    store.save("job-1", [payload(bytes([i])) for i in range(20)])
    assert list(store.root.rglob(".tmp-*")) == []


def test_unknown_body_raises_the_domain_not_found_error(store: FileRawStore) -> None:
    # one error tree: callers (the API) map NotFoundError to 404, a bare OSError to 500
    with pytest.raises(NotFoundError):
        store.body("00" * 32, "acme")
