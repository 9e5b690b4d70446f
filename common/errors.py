"""The one root of every exception a user of Eager can meet.

It lives in common/ (not eager/) because the stages' own modules raise user-visible errors and must not
import the client package; `eager.EagerError` re-exports it. Each exception keeps its historical base too
(ProtocolError stays a ValueError), so existing `except ValueError` code keeps working."""

from __future__ import annotations


class EagerError(Exception):
    """Catch this to handle anything Eager raises on purpose."""
