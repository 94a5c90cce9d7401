from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from aviator.gateway.auth import (
    ANONYMOUS,
    ApiKeyAuthenticator,
    NoAuth,
    Unauthenticated,
    load_api_keys,
)


def headers(value: str | None) -> CIMultiDict[str]:
    return CIMultiDict() if value is None else CIMultiDict({"authorization": value})


def test_every_configured_key_is_accepted_and_named_by_position() -> None:
    auth = ApiKeyAuthenticator(["sk-one", "sk-two"])
    assert auth.authenticate(headers("Bearer sk-one")).id == "api-key/0"
    assert auth.authenticate(headers("bearer   sk-two ")).id == "api-key/1"
    assert "sk-" not in repr(auth.authenticate(headers("Bearer sk-two")))


@pytest.mark.parametrize(
    "value",
    [None, "", "Bearer", "Bearer ", "Basic sk-one", "Bearer sk-on", "Bearer sk-one2", "sk-one"],
)
def test_anything_else_is_refused_without_detail(value: str | None) -> None:
    auth = ApiKeyAuthenticator(["sk-one"])
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(headers(value))
    assert str(info.value) == ""


def test_no_keys_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ApiKeyAuthenticator([])


def test_no_auth_lets_everyone_in_as_anonymous() -> None:
    assert NoAuth().authenticate(headers(None)) == ANONYMOUS


def test_key_files_skip_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# clients\n\nsk-one\n  sk-two  \n")
    assert load_api_keys(path) == ["sk-one", "sk-two"]
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no API key") as info:
        load_api_keys(path)
    assert str(path) in str(info.value)
