"""Rejections and errors that carry a machine-readable code and a sentence for people."""
from __future__ import annotations


class HeadshotError(Exception):
    """An error a person can act on: `code` for programs, the message for people."""

    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class PhotoRejected(HeadshotError):
    """One photo cannot be used; the rest of the batch goes on."""


class BackendUnavailable(HeadshotError):
    """An optional model or library is missing; the message says what to install or where to put files."""

    code = "backend_unavailable"
