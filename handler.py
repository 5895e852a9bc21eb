"""The AWS Lambda entry: API Gateway REST (payload 1.0) events through aws-wsgi into the Flask app.

The app is built once per container, on the first invocation, and reused while the container is
warm. Importing this module does no network work and reads no configuration source.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import awsgi

from costroute.config.settings import SettingsError
from costroute.web.context import (
    CALLER_ENVIRON_KEY,
    ON_LAMBDA_ENVIRON_KEY,
    REQUEST_ID_ENVIRON_KEY,
    TIME_LEFT_ENVIRON_KEY,
)

logger = logging.getLogger("costroute.handler")

_app: Callable[..., Iterable[bytes]] | None = None

# Content types answered base64-encoded (none of ours are binary; listed for completeness).
BASE64_CONTENT_TYPES: frozenset[str] = frozenset()


def _application() -> Callable[..., Iterable[bytes]]:
    global _app
    if _app is None:
        from costroute.bootstrap import build_runtime
        from costroute.config.settings import Settings
        from costroute.web import create_app

        flask_app = create_app(build_runtime(Settings.from_env()))

        def with_time_left(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            context = environ.get("awsgi.context")
            remaining = getattr(context, "get_remaining_time_in_millis", None)
            if callable(remaining):
                environ[TIME_LEFT_ENVIRON_KEY] = remaining() / 1000
            # Who is calling and which request this is come from API Gateway itself, never from a
            # header the client could set.
            environ[ON_LAMBDA_ENVIRON_KEY] = True
            request_context = (environ.get("awsgi.event") or {}).get("requestContext") or {}
            identity = request_context.get("identity") or {}
            if isinstance(identity, dict) and identity.get("apiKeyId"):
                environ[CALLER_ENVIRON_KEY] = str(identity["apiKeyId"])
            if request_context.get("requestId"):
                environ[REQUEST_ID_ENVIRON_KEY] = str(request_context["requestId"])
            body = flask_app(environ, start_response)
            # aws-wsgi never calls close() on the response, so call_on_close hooks would not run:
            # read the body here and close it, as the WSGI spec asks of a server.
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if callable(close):
                    close()

        _app = with_time_left
    return _app


def normalise_event(raw: Any) -> dict[str, Any]:
    """Fill in what hand-written test events leave out, so aws-wsgi can read them."""
    event: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    event.setdefault("httpMethod", "GET")
    event.setdefault("path", "/")
    for key in ("queryStringParameters", "multiValueQueryStringParameters", "pathParameters", "stageVariables"):
        event.setdefault(key, None)
    multi_headers = event.get("multiValueHeaders")
    if not isinstance(multi_headers, dict):
        multi_headers = event["multiValueHeaders"] = {}
    if not isinstance(event.get("headers"), dict):
        # aws-wsgi reads only ``headers``: take the last of each multi-value header instead.
        event["headers"] = _last_values(multi_headers)
    if event["queryStringParameters"] is None and isinstance(event["multiValueQueryStringParameters"], dict):
        event["queryStringParameters"] = _last_values(event["multiValueQueryStringParameters"])
    if not isinstance(event.get("requestContext"), dict):
        event["requestContext"] = {}
    event["body"] = event.get("body") or ""
    event["isBase64Encoded"] = bool(event.get("isBase64Encoded"))
    return event


def _last_values(multi: dict[str, Any]) -> dict[str, Any]:
    """The last value of each non-empty list in a multi-value mapping."""
    return {name: values[-1] for name, values in multi.items() if isinstance(values, list) and values}


def is_payload_v2(event: Any) -> bool:
    """Whether the event is an HTTP API or Function URL event (payload format 2.0)."""
    if not isinstance(event, dict):
        return False
    context = event.get("requestContext")
    return event.get("version") == "2.0" or (
        "httpMethod" not in event and isinstance(context, dict) and isinstance(context.get("http"), dict)
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Serve one API Gateway REST proxy event; statusCode comes back as an integer."""
    if is_payload_v2(event):
        return _error_response(
            400,
            "unsupported_event",
            "this function expects API Gateway REST API events (payload format 1.0); it got a payload format 2.0 "
            "event (an HTTP API or a Lambda Function URL). Deploy it behind the REST API of template.yaml.",
        )
    try:
        app = _application()
    except SettingsError as exc:
        # A bad environment variable: answer in the one error shape rather than API Gateway's bare
        # 502, and build again on the next invocation (the app is not cached).
        logger.error("the function's environment is invalid: %s", exc)
        return _error_response(500, "config_invalid", str(exc))
    try:
        response: dict[str, Any] = awsgi.response(app, normalise_event(event), context,
                                                  base64_content_types=BASE64_CONTENT_TYPES)
    except (binascii.Error, UnicodeError, TypeError) as exc:
        # aws-wsgi could not turn the event into a request (a body that is not base64 though it
        # says so, or not text): the caller's event is wrong, so answer 400 rather than crash.
        why = {
            binascii.Error: "it says isBase64Encoded but is not base64",
            UnicodeEncodeError: "it is not valid text",
            UnicodeDecodeError: "it is not valid text",
        }.get(type(exc), "it is not a string")
        logger.warning("unreadable event body: %s", why)
        return _error_response(400, "invalid_event", f"the event's body could not be read: {why}")
    response["statusCode"] = int(response["statusCode"])
    return response


def _error_response(status: int, error_type: str, message: str) -> dict[str, Any]:
    """A proxy response carrying the one JSON error shape, built without the app."""
    body = {"error": {"type": error_type, "message": message, "param": None, "code": error_type}}
    return {
        "statusCode": status,
        # As every error of the app: the SDKs retry a 500 on their own, and a retry would fail alike.
        "headers": {"Content-Type": "application/json", "x-should-retry": "false"},
        "isBase64Encoded": False,
        "body": json.dumps(body),
    }


class LocalContext:
    """A stand-in for the Lambda context when invoking locally: 30 s left, as a fresh invocation."""

    function_name = "RouterFunction-local"
    aws_request_id = "local-invoke"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left: a fixed 30 s locally."""
        return 30_000


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python handler.py EVENT.json")
    with open(sys.argv[1], encoding="utf-8") as event_file:
        print(json.dumps(lambda_handler(json.load(event_file), LocalContext()), indent=2))
