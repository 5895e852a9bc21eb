"""The WSGI entry for ``flask run`` and gunicorn: ``costroute.wsgi:app``.

Importing this module builds the app from the environment (no network: configuration sources
are read on first use) and announces an invalid setting or registry in one line on the console.
"""

from costroute.entry import build_app

app = build_app()
