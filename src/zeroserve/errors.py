"""One error tree for zeroserve.

Every error carries the HTTP status it maps to and a message that says what
went wrong and how to fix it. The gateway turns any ``ZeroserveError`` into a
JSON response in one place; anything else becomes a 500 without a stack trace.

    ZeroserveError (500)
    ├── BadRequest (400)
    │   ├── MalformedPayload (400)      body is not valid JSON / protocol
    │   ├── InvalidInput (422)          does not match the signature
    │   └── InvalidArtifact (400)       cannot be registered as given
    │       └── UntrustedArtifact (400) pickle without --trust
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── EndpointNotFound
    │   └── JobNotFound
    ├── Conflict (409)
    ├── JobFailed (422)                 an async job or batch run ended without a result
    ├── PayloadTooLarge (413)
    ├── TooManyRequests (429)           queue full; carries Retry-After
    ├── MissingExtra (500)              an optional dependency is not installed
    ├── BadModelOutput (502)            the model answered with the wrong shape or rows
    └── ServiceUnavailable (503)
        ├── ServerUnreachable           the client could not connect to the server
        ├── ReplicaCrashed              the worker died holding the request
        ├── ReplicaHung                 the worker missed its batch deadline and was replaced
        ├── NoReplicaAvailable          could not start a replica in time
        └── RequestTimeout (504)
"""

from __future__ import annotations

from typing import Any


class ZeroserveError(Exception):
    """Base of every error zeroserve raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ZeroserveError):
    status_code = 400
    code = "bad_request"


class MalformedPayload(BadRequest):
    code = "malformed_payload"


class InvalidInput(BadRequest):
    status_code = 422
    code = "invalid_input"


class InvalidArtifact(BadRequest):
    code = "invalid_artifact"


class UntrustedArtifact(InvalidArtifact):
    code = "untrusted_artifact"


class Unauthorized(ZeroserveError):
    status_code = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="zeroserve"'}


class Forbidden(ZeroserveError):
    status_code = 403
    code = "forbidden"


class NotFound(ZeroserveError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(ZeroserveError):
    status_code = 409
    code = "conflict"


class JobFailed(ZeroserveError):
    """An async job or a batch run failed; the message is the job's own error."""

    status_code = 422
    code = "job_failed"


class PayloadTooLarge(ZeroserveError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(ZeroserveError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class MissingExtra(ZeroserveError):
    """An optional dependency is needed; the message names the extra to install."""

    code = "missing_extra"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'zeroserve[{extra}]'",
            package=package,
            extra=extra,
        )


class ServiceUnavailable(ZeroserveError):
    status_code = 503
    code = "service_unavailable"


class ServerUnreachable(ServiceUnavailable):
    """Raised by the client: nothing answered at the server's URL."""

    code = "server_unreachable"


class ReplicaCrashed(ServiceUnavailable):
    code = "replica_crashed"


class ReplicaHung(ServiceUnavailable):
    code = "replica_hung"


class NoReplicaAvailable(ServiceUnavailable):
    code = "no_replica_available"


class RequestTimeout(ServiceUnavailable):
    status_code = 504
    code = "request_timeout"


class ModelError(ZeroserveError):
    """The model raised while predicting on input that matched its signature."""

    status_code = 422
    code = "model_error"


class BadModelOutput(ZeroserveError):
    """The model answered, but not with one output row per input row (a bug in the model)."""

    status_code = 502
    code = "bad_model_output"


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise ``MissingExtra`` with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module.split(".", maxsplit=1)[0], extra) from exc
