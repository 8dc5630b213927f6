"""The API's one mapping of platform errors to HTTP statuses."""

from __future__ import annotations

import pytest

from quantivista.api.errors import status_of
from quantivista.errors import (
    InvalidInputError,
    NotFoundError,
    QuantiVistaError,
    StorageError,
    StorageRejectedError,
    StorageUsageError,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StorageError("the store does not answer"), 503),  # retryable: come back later
        (StorageUsageError("unknown column", column="x"), 422),  # the request is wrong
        (StorageRejectedError("value out of range"), 422),  # the data is wrong
        (InvalidInputError("bad"), 422),
        (NotFoundError("no such job"), 404),
        (QuantiVistaError("anything else"), 500),
    ],
)
def test_a_permanent_storage_error_is_the_callers_422_not_a_503(
    error: QuantiVistaError, status: int
) -> None:
    assert status_of(error) == status
