"""Spend stores: where reservations, spend, the ledger and usage live (memory, SQLite, DynamoDB)."""
