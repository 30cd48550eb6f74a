"""multipart/form-data bodies (audio uploads): read the fields, change one, write the body back.

Parts keep their raw header bytes, so rebuilding a form after changing the model field copies the
file part as it came.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from relay.errors import bad_request

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(rb'(\w+)="([^"]*)"')


@dataclass(slots=True)
class Part:
    headers: bytes  # the raw header lines of the part
    data: bytes
    name: str = ""
    filename: str | None = None


@dataclass(slots=True)
class Form:
    boundary: str
    parts: list[Part]

    def field(self, name: str) -> str | None:
        for part in self.parts:
            if part.name == name and part.filename is None:
                return part.data.decode("utf-8", "replace")
        return None

    def fields(self) -> dict[str, str]:
        """The text fields by name (the last of a repeated name)."""
        return {p.name: p.data.decode("utf-8", "replace") for p in self.parts if p.filename is None}

    def file(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name and p.filename is not None), None)

    def with_field(self, name: str, value: str) -> Form:
        parts = [Part(p.headers, value.encode(), p.name, p.filename) if p.name == name and p.filename is None else p for p in self.parts]
        return Form(self.boundary, parts)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def encode(self) -> bytes:
        delimiter = b"--" + self.boundary.encode()
        out = [delimiter + b"\r\n" + p.headers + b"\r\n\r\n" + p.data + b"\r\n" for p in self.parts]
        return b"".join(out) + delimiter + b"--\r\n"


def _part(raw: bytes) -> Part:
    headers, sep, data = raw.partition(b"\r\n\r\n")
    if not sep:
        raise bad_request("A multipart part has no header/body separator.", code="invalid_multipart")
    params: dict[bytes, bytes] = {}
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-disposition:"):
            params = dict(_PARAM.findall(line))
    filename = params.get(b"filename")
    return Part(headers, data, params.get(b"name", b"").decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None)


def parse(body: bytes, content_type: str | None) -> Form:
    match = _BOUNDARY.search(content_type or "")
    if not (content_type or "").lower().startswith("multipart/form-data") or not match:
        raise bad_request("Send this request as multipart/form-data.", code="invalid_content_type")
    boundary = match.group(1) or match.group(2)
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise bad_request("The multipart body is incomplete.", code="invalid_multipart")
    parts = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise bad_request("The multipart body is malformed.", code="invalid_multipart")
        parts.append(_part(chunk[2:-2]))
    return Form(boundary, parts)
