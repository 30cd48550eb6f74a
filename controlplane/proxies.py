"""Behind trusted proxies the client is the client: WSGI middleware that puts the client's address
in REMOTE_ADDR (relay/client_ip.py decides which), so sign-in and sign-up throttles, audit entries
and the session list all read the same address through `request.remote_addr`. The address the
connection came from stays in `switchboard.peer_addr`."""
from __future__ import annotations

from relay.client_ip import Network, client_address

PEER_KEY = "switchboard.peer_addr"


class TrustedProxies:
    def __init__(self, app, trusted: tuple[Network, ...]):
        self.app = app
        self.trusted = trusted

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR")
        environ[PEER_KEY] = peer
        if peer:
            environ["REMOTE_ADDR"] = client_address(
                peer, environ.get("HTTP_X_FORWARDED_FOR"), environ.get("HTTP_FORWARDED"), self.trusted)
        return self.app(environ, start_response)
