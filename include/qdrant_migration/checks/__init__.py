"""Evidence about a target: complete, indexed, searching as well as exact search, and
retrieving as well as the old model. Everything here only reads."""

from __future__ import annotations


class CheckFailedError(RuntimeError):
    """The target can never pass as it is; the message says what is wrong."""
