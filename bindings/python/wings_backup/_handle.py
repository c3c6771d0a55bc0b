"""A native pointer that is freed exactly once, and never while a call uses it."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional


class NativeHandle:
    def __init__(self, ptr: int, free: Callable[[int], None], what: str) -> None:
        self._ptr: Optional[int] = ptr
        self._free = free
        self._what = what
        self._users = 0
        self._closing = False
        # Reentrant: CancelToken.cancel() may run in a signal handler that
        # interrupted this very thread inside use().
        self._lock = threading.RLock()

    @property
    def closed(self) -> bool:
        return self._closing

    @contextlib.contextmanager
    def use(self, *, while_closing: bool = False) -> Iterator[int]:
        """Lends the pointer for one call. A close() meanwhile waits for the
        call to end before freeing it."""
        with self._lock:
            if self._ptr is None or (self._closing and not while_closing):
                raise ValueError(f"the {self._what} is closed")
            self._users += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._lock:
                self._users -= 1
                self._release_if_unused()

    def close(self) -> None:
        """Frees the pointer now, or when the last running call returns."""
        with self._lock:
            self._closing = True
            self._release_if_unused()

    def _release_if_unused(self) -> None:
        if self._closing and self._users == 0 and self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            self._free(ptr)
