"""Queue names and the job defaults every enqueue uses."""
from __future__ import annotations

USAGE = "usage"
DEFAULT = "default"
HEALTH = "health"
PROBE = "probe"  # long network-bound runs: their own worker, so they never delay usage ingestion
ALL = (USAGE, HEALTH, DEFAULT)

INGEST_TIMEOUT = 120  # seconds; a batch never needs this long
MAINTENANCE_TIMEOUT = 300
HEALTH_TIMEOUT = 60
PROBE_TIMEOUT = 900
