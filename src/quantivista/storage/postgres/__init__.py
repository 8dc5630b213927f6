"""The PostgreSQL backend (extra `postgres`): every kind of state in one schema.

Importing this package does not import psycopg; its modules do.
"""
