"""A real SMTP server (aiosmtpd) that keeps what it receives, for tests of email delivery."""
from __future__ import annotations

from email import message_from_bytes

from aiosmtpd.controller import Controller


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class FakeSMTP:
    def __init__(self):
        self.inbox = _Inbox()
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self):
        return self.inbox.messages

    def close(self):
        self.controller.stop()
