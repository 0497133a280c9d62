"""Query parameters, pagination and JSON bodies shared by the endpoint modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubquant.testhub.errors import bad_request
from hubquant.testhub.transport import Request

if TYPE_CHECKING:
    from hubquant.testhub.app import Context


def expand_param(request: Request) -> list[str] | None:
    """Return the properties named by `expand=` or `expand[]=`, or None when absent."""
    values = request.query.get("expand", []) + request.query.get("expand[]", [])
    return values or None


def int_param(request: Request, name: str) -> int | None:
    value = request.param(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(
            f"Invalid {name} {value!r}: expected a whole number."
        ) from None
    if number < 0:
        raise bad_request(f"Invalid {name} {value!r}: expected a number of at least 0.")
    return number


def page(items: list, request: Request, page_size: int) -> tuple[list, int | None]:
    """Return the page at the `cursor` parameter and the next cursor (or None)."""
    start = int_param(request, "cursor") or 0
    end = start + page_size
    return items[start:end], (end if end < len(items) else None)


def json_object(context: Context) -> dict:
    payload = context.request.body.json()
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload
