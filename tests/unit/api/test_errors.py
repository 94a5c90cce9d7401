import pytest

from aviator.api import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.BadRequest,
        errors.Unauthorized,
        errors.NotFound,
        errors.AlreadyExists,
        errors.Conflict,
        errors.Gone,
        errors.RequestEntityTooLarge,
        errors.Invalid,
        errors.TooManyRequests,
        errors.InternalError,
    ],
)
def test_status_round_trip_keeps_class_and_details(cls: type[errors.ApiError]) -> None:
    err = cls(
        "boom",
        kind="ModelDeployment",
        name="chat",
        causes=(errors.FieldError("spec.x", "bad"),),
        retry_after=2.4,
    )
    back = errors.from_status(err.to_status())
    assert type(back) is cls
    assert (back.message, back.kind, back.name, back.causes) == (
        "boom",
        "ModelDeployment",
        "chat",
        err.causes,
    )
    assert back.retry_after == 2


def test_unknown_reason_falls_back_to_the_code() -> None:
    assert isinstance(errors.from_status({"code": 409, "reason": "Weird"}), errors.AlreadyExists)
    assert isinstance(errors.from_status({"code": 418}), errors.InternalError)


def test_str_lists_the_causes() -> None:
    err = errors.Invalid("x is invalid", causes=(errors.FieldError("spec.a", "required value"),))
    assert str(err) == "x is invalid\n  spec.a: required value"
