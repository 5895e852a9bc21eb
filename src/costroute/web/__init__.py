"""The web layer: the Flask app factory. Flask is imported here and nowhere below it.

The entrypoints build the runtime (``bootstrap.build_runtime``) and hand it in: the web layer
never composes adapters itself.
"""

from __future__ import annotations

import logging

from flask import Flask

from costroute.runtime import Runtime

# What create_app returns, for entrypoints that must not import Flask themselves.
App = Flask


def create_app(runtime: Runtime) -> Flask:
    """A fresh app serving the given runtime."""
    from costroute.web import context
    from costroute.web.errors import register_error_handlers
    from costroute.web.metrics import metrics
    from costroute.web.native import native
    from costroute.web.openai_compat import openai_compat
    from costroute.web.openapi import openapi
    from costroute.web.playground import playground
    from costroute.web.usage import usage

    logging.getLogger("costroute").setLevel(runtime.settings.log_level)
    app = Flask("costroute")
    # One byte past the limit, so that a chunked body over it is read far enough to be refused
    # (werkzeug stops a chunked body at MAX_CONTENT_LENGTH without saying so); see read_json_body.
    app.config["COSTROUTE_MAX_BODY"] = runtime.settings.max_body_bytes
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes + 1
    # No automatic OPTIONS answers (an empty text/html body): OPTIONS gets the JSON 405 with Allow.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions["costroute"] = runtime
    app.register_blueprint(native)
    app.register_blueprint(openai_compat)
    app.register_blueprint(openapi)
    app.register_blueprint(usage)
    app.register_blueprint(metrics)
    app.register_blueprint(playground)
    register_error_handlers(app)
    context.install(app)
    return app
