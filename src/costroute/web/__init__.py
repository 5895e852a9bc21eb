"""The web layer: the Flask app factory. Flask is imported here and nowhere below it."""

from __future__ import annotations

import logging

from flask import Flask

from costroute.bootstrap import Runtime, build_runtime
from costroute.config.settings import Settings


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build a fresh app; settings default to the environment, the runtime to ``build_runtime``."""
    from costroute.web.errors import register_error_handlers
    from costroute.web.native import native
    from costroute.web.openai_compat import openai_compat
    from costroute.web.openapi import openapi

    if runtime is None:
        runtime = build_runtime(settings or Settings.from_env())
    logging.getLogger("costroute").setLevel(runtime.settings.log_level)
    app = Flask("costroute")
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    # No automatic OPTIONS answers (an empty text/html body): OPTIONS gets the JSON 405 with Allow.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions["costroute"] = runtime
    app.register_blueprint(native)
    app.register_blueprint(openai_compat)
    app.register_blueprint(openapi)
    register_error_handlers(app)
    return app
