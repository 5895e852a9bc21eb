"""The WSGI entry for ``flask run`` and gunicorn: ``costroute.wsgi:app``.

Importing this module builds the app from the environment (no network: configuration sources
are read on first use).
"""

from costroute.web import create_app

app = create_app()
