"""Queue names and the job defaults every enqueue uses."""
from __future__ import annotations

DEFAULT = "default"
HEALTH = "health"
PROBE = "probe"  # long network-bound runs: their own worker, so they never delay health reports
ALL = (HEALTH, DEFAULT)

MAINTENANCE_TIMEOUT = 300
HEALTH_TIMEOUT = 60
PROBE_TIMEOUT = 900
