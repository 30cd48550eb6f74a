"""Background work on RQ: usage ingestion, maintenance, and (later) health checks and alerts.

Jobs take ids and primitives, are idempotent, and run inside a Flask app context (the worker's, or
one made for them when a script calls them directly).
"""
