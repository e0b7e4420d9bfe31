"""User-facing errors: what went wrong, where, and how to fix it.

The CLI prints a `TailorError` as one clear message and exits non-zero without a traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class TailorError(Exception):
    """An error caused by the user's input (a file, a config value, a model directory)."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  where: {self.where}")
        if self.fix:
            parts.append(f"  fix:   {self.fix}")
        return "\n".join(parts)
