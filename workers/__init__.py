"""Background work: the usage consumer (`switchboard ingest`, consumer.py) and RQ jobs — maintenance,
health checks, alerts, mail.

Jobs take ids and primitives, are idempotent, and run inside a Flask app context (the worker's, or
one made for them when a script calls them directly).
"""
