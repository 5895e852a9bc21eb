"""Provider adapters behind the ``Provider`` protocol: the shipped mock and OpenAI."""
