"""Small text helpers shared by the backends."""

from collections.abc import Sequence

__all__ = ["cut_at_stop"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Returns ``text`` up to (excluding) the earliest occurrence of any stop string."""
    end = len(text)
    for s in stop:
        if s:
            k = text.find(s)
            if k != -1:
                end = min(end, k)
    return text[:end]
