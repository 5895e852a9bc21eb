"""Building the app for the local entrypoints (``costroute.wsgi``, the top-level ``app.py``).

A setting that cannot be right stops the process with one line naming the variable, instead of a
traceback. A registry that does not validate is announced in one line at start-up, when it can be
read without the network (``MODELS_CONFIG_JSON``, ``MODELS_CONFIG_FILE`` or the built-in one); the
service still starts, answering 503 with the same message, as documented.
"""

from __future__ import annotations

import sys

from costroute.bootstrap import build_runtime
from costroute.config.cache import ConfigError
from costroute.config.settings import Settings, SettingsError
from costroute.web import App, create_app


def build_app() -> App:
    """The app from the environment; exits with one line when a setting is invalid."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"costroute: invalid setting: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    runtime = build_runtime(settings)
    if settings.models_config_ssm_parameter is None or settings.models_config_json is not None:
        try:
            runtime.registry.get()
        except ConfigError as exc:
            print(f"costroute: {exc}", file=sys.stderr, flush=True)
    return create_app(runtime)
