"""Spend stores: where reservations, spend, the ledger and usage live (memory, SQLite, DynamoDB).

``StoreUnavailable`` is defined here, not in ``base``, so that the web layer can answer it without
importing the stores' record classes on a cold start without budgets.
"""


# A store that cannot be reached: a client may try again shortly.
STORE_RETRY_AFTER_SECONDS = 1.0


class StoreUnavailable(Exception):
    """The store could not be read or written; the message names it and never holds a secret."""
