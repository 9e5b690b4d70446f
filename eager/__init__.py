"""Eager: run LLM-written Python while the model is still writing it."""

from common.errors import EagerError

__all__ = ["EagerError"]
