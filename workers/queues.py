"""Queue names and the job defaults every enqueue uses."""
from __future__ import annotations

USAGE = "usage"
DEFAULT = "default"
HEALTH = "health"
ALL = (USAGE, HEALTH, DEFAULT)

INGEST_TIMEOUT = 120  # seconds; a batch never needs this long
MAINTENANCE_TIMEOUT = 300
