"""Persistence: tables, the engine, every SQL query (repository), migrations and the batch writer."""
