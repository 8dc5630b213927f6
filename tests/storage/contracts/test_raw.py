"""The bronze contract on every backend: payloads kept once by content, a manifest per job."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from polars.testing import assert_frame_equal

from quantivista.errors import NotFoundError
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import RAW_MANIFEST_SCHEMA
from quantivista.storage.contracts import Backend

from .conftest import Site

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


def test_save_keeps_the_body_by_its_digest(backend: Backend) -> None:
    body = b'{"bars": [1, 2, 3]}'
    assert backend.raw.save("job-1", [payload(body)]) == 1
    assert backend.raw.body(hashlib.sha256(body).hexdigest(), "acme") == body


def test_bodies_come_back_byte_for_byte(backend: Backend) -> None:
    bodies = [bytes(range(256)), b"", b"\x00" * 10, "naïve ✓".encode(), b"x" * 3_000_000]
    assert backend.raw.save("job-1", [payload(b) for b in bodies]) == len(bodies)
    for body in bodies:
        assert backend.raw.body(hashlib.sha256(body).hexdigest(), "acme") == body


def test_manifest_describes_each_payload(backend: Backend) -> None:
    backend.raw.save("job-1", [payload(b"one"), payload(b"two")])
    manifest = backend.raw.manifest("job-1")
    assert manifest.schema == RAW_MANIFEST_SCHEMA
    assert manifest.height == 2
    digest = hashlib.sha256(b"one").hexdigest()
    assert manifest.row(0, named=True) == {
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
    assert manifest["sha256"][1] == hashlib.sha256(b"two").hexdigest()  # in the order given


def test_the_same_body_is_stored_once_but_listed_every_time(backend: Backend) -> None:
    body = b"same"
    assert backend.raw.save("job-1", [payload(body), payload(body)]) == 1
    assert backend.raw.save("job-2", [payload(body)]) == 0
    assert backend.raw.manifest("job-1").height == 2
    assert backend.raw.manifest("job-2").height == 1
    assert backend.raw.manifest().height == 3
    assert backend.raw.manifest()["job_id"].to_list() == ["job-1", "job-1", "job-2"]


def test_providers_keep_separate_copies(backend: Backend) -> None:
    assert backend.raw.save("job-1", [payload(b"x", "acme"), payload(b"x", "other")]) == 2
    digest = hashlib.sha256(b"x").hexdigest()
    assert backend.raw.body(digest, "other") == b"x"
    assert backend.raw.body(digest, "acme") == b"x"


def test_saving_nothing_lists_nothing(backend: Backend) -> None:
    assert backend.raw.save("job-1", []) == 0
    assert backend.raw.manifest().is_empty()
    assert backend.raw.manifest().schema == RAW_MANIFEST_SCHEMA


def test_manifest_of_unknown_job_is_empty_with_schema(backend: Backend) -> None:
    backend.raw.save("job-1", [payload(b"x")])
    empty = backend.raw.manifest("job-404")
    assert empty.is_empty()
    assert empty.schema == RAW_MANIFEST_SCHEMA


def test_unknown_or_malformed_digests_raise_not_found(backend: Backend) -> None:
    # one error tree: callers (the API) map NotFoundError to 404
    backend.raw.save("job-1", [payload(b"x")])
    with pytest.raises(NotFoundError):
        backend.raw.body("00" * 32, "acme")
    with pytest.raises(NotFoundError):
        backend.raw.body(hashlib.sha256(b"x").hexdigest(), "nobody")
    for bad in ("../../etc/passwd", "AB" * 32, "0" * 63):
        with pytest.raises(NotFoundError, match="not a payload digest"):
            backend.raw.body(bad, "acme")


def test_concurrent_saves_of_one_body_store_it_once(backend: Backend) -> None:
    def save(i: int) -> int:
        return backend.raw.save(f"job-{i}", [payload(b"shared"), payload(f"own {i}".encode())])

    with ThreadPoolExecutor(4) as pool:
        written = sum(pool.map(save, range(12)))
    assert written == 12 + 1
    assert backend.raw.manifest().height == 24
    assert backend.raw.body(hashlib.sha256(b"shared").hexdigest(), "acme") == b"shared"


def test_payloads_are_seen_by_another_instance(site: Site) -> None:
    site.open().raw.save("job-1", [payload(b"x")])
    other = site.open().raw
    assert other.manifest("job-1").height == 1
    assert other.body(hashlib.sha256(b"x").hexdigest(), "acme") == b"x"


def test_lake_and_postgres_return_the_same_frames(twins: tuple[Backend, Backend]) -> None:
    for b in twins:
        b.raw.save("job-2", [payload(b"a"), payload(b"b", "other", "https://other/y")])
        b.raw.save("job-1", [payload(b"a"), payload(b"c")])
        b.raw.save("job-2", [payload(b"d")])
    lake, pg = (b.raw for b in twins)
    assert_frame_equal(pg.manifest("job-1"), lake.manifest("job-1"))
    assert_frame_equal(pg.manifest("job-404"), lake.manifest("job-404"))
    # the lake lists one job's saves in file-name order (random), so compare as sets
    assert sorted(pg.manifest().rows()) == sorted(lake.manifest().rows())
    assert pg.manifest()["job_id"].to_list() == lake.manifest()["job_id"].to_list()
