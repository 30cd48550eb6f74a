"""Symmetric encryption of upstream credentials (Fernet): at rest in SQL and inside the snapshot."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class Cipher:
    def __init__(self, key: str):
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("credential cannot be decrypted with this encryption key") from None
