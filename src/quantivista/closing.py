"""`Closing`: a base for objects that hold resources and close in a `with` block."""

from __future__ import annotations

from typing import Self

__all__ = ["Closing"]


class Closing:
    """`with thing:` returns `thing` and calls `thing.close()` when the block ends, however."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
