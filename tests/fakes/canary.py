"""A canary listener: it serves nothing and records every connection and the bytes that arrive on
it, so a test can prove that nothing (no upstream key, no webhook) was ever sent to its address."""
from __future__ import annotations

import socket
import threading


class Canary:
    def __init__(self, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.connections = 0  # counted at accept, before anything is read
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://{self.host if ':' not in self.host else '[' + self.host + ']'}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            with self._lock:
                self.received.append(data)
            conn.close()

    def close(self) -> None:
        self.sock.close()
