"""The write paths of the control plane: each mutates, commits, audits and publishes the snapshot.

Views, the CLI and the admin API call these and nothing else to change state.
"""
from controlplane.services.base import Actor, NotFound, ServiceError

__all__ = ["Actor", "NotFound", "ServiceError"]
