"""The thread-side boundary: sqlite3 and other failures become aviator.api.errors."""

from __future__ import annotations

import sqlite3

import pytest

from aviator.api import errors
from aviator.store.database import run_translated


def raise_(exc: BaseException) -> None:
    raise exc


def busy() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
    return exc


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (busy(), errors.TooManyRequests),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), errors.Conflict),
        (sqlite3.OperationalError("disk I/O error"), errors.InternalError),
        (sqlite3.DatabaseError("file is not a database"), errors.InternalError),
        (KeyError("bug"), errors.InternalError),
    ],
)
def test_failures_are_translated_and_chained(
    raised: BaseException, expected: type[errors.ApiError]
) -> None:
    with pytest.raises(expected) as caught:
        run_translated(raise_, raised)
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised


def test_api_errors_and_results_pass_through() -> None:
    original = errors.NotFound("x")
    with pytest.raises(errors.NotFound) as caught:
        run_translated(raise_, original)
    assert caught.value is original

    def add(a: int, *, b: int) -> int:
        return a + b

    assert run_translated(add, 1, b=2) == 3


def test_busy_asks_the_caller_to_retry() -> None:
    with pytest.raises(errors.TooManyRequests) as caught:
        run_translated(raise_, busy())
    assert caught.value.to_status()["details"] == {"retryAfterSeconds": 1}
