"""HTTP errors of the client API: ``{"error": {"code": "...", "message": "..."}}``.

Every refusal is a 4xx with a stable ``code`` (documented in docs/node.md); the
ledger is unchanged and the node keeps running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final


class ApiError(Exception):
    """A client-visible error: HTTP ``status``, machine ``code``, human ``message``,
    and optional extra fields for the error object (e.g. ``suggestions``)."""

    def __init__(
        self, status: int, code: str, message: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})

    def body(self) -> dict[str, dict[str, Any]]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


#: Status for each error code (the one table the docs repeat).
ERROR_STATUS: Final = {
    "bad_request": 400,
    "bad_encoding": 400,
    "bad_schema": 400,
    "bad_json": 400,
    "unsupported_media_type": 415,
    "body_too_large": 413,
    "too_many_transactions": 413,
    "unauthenticated": 401,
    "bad_signature": 401,
    "stale_request": 401,
    "replayed_request": 401,
    "unknown_key": 401,
    "forbidden": 403,
    "not_validator": 403,
    "unknown_channel": 404,
    "not_found": 404,
    "wrong_network": 400,
    "wrong_channel": 400,
    "invalid_transaction": 422,
    "bad_transaction_signature": 422,
    "not_permitted": 403,
    "overloaded": 503,
    "not_ready": 503,
    "bad_frame": 400,
    "bad_evidence_code": 400,
    "not_anchored": 404,
}


def api_error(code: str, message: str, extra: Mapping[str, Any] | None = None) -> ApiError:
    return ApiError(ERROR_STATUS.get(code, 400), code, message, extra)
