"""Progress reports, cancel tokens, and the bridge that runs a Python
callback from inside a long C call."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import enum
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ._handle import NativeHandle
from ._native import LIB, PROGRESS_FN, WbProgress


class Phase(enum.IntEnum):
    """``WB_PHASE_*``: what a long call is doing."""

    STARTED = 0  #: accepted: validated, and the server is held by this call
    ARCHIVE = 1  #: reading files into the archive (bytes: source bytes)
    UPLOAD = 2  #: uploading the archive to S3 (bytes: archive bytes)
    EXTRACT = 3  #: reading and unpacking the archive (bytes: archive bytes)
    COMMIT = 4  #: putting restored files in place
    REPORT = 5  #: telling the Panel the result of a backup (restores report in the background)
    DONE = 6  #: finished successfully; the last report

    @classmethod
    def _missing_(cls, value: object) -> Optional["Phase"]:
        # A newer library may report phases this binding does not know yet:
        # keep the number rather than fail inside the callback.
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"PHASE_{value}"
        member._value_ = value
        return member


@dataclass(frozen=True)
class Progress:
    """One progress report. ``bytes_total`` 0 means unknown. Within one phase,
    ``bytes_done``, ``entries_done`` and ``archive_bytes`` never decrease.
    ``archive_bytes`` counts compressed bytes: written so far by a create,
    read so far by a restore (0 from a library that does not report it)."""

    phase: Phase
    bytes_done: int
    bytes_total: int
    entries_done: int
    archive_bytes: int = 0

    @property
    def fraction(self) -> Optional[float]:
        """``bytes_done / bytes_total`` (at most 1.0), or None when the total is unknown."""
        if not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)

    @classmethod
    def _from_c(cls, p: WbProgress) -> "Progress":
        # A library older than this binding passes a shorter struct.
        archive_bytes = p.archive_bytes if p.struct_size >= _ARCHIVE_BYTES_END else 0
        return cls(Phase(p.phase), p.bytes_done, p.bytes_total, p.entries_done, archive_bytes)


_ARCHIVE_BYTES_END = WbProgress.archive_bytes.offset + WbProgress.archive_bytes.size

#: A progress callback. The contract, the same as Go's ``func(Progress) bool``:
#: returning ``False`` stops the call, which then raises
#: :class:`~wings_backup.CancelledError`; raising stops the call, which then
#: raises that exception again once it has stopped. Any other return value
#: (``None``, ``True``) lets the call go on.
ProgressCallback = Callable[[Progress], Any]


class CancelToken:
    """Stops the calls it is given, promptly, with :class:`CancelledError`.

    :meth:`cancel` may be called from any thread (or a signal handler), at any
    time; one token may serve several calls. The native token is freed by
    :meth:`close`, by ``with``, or when the object is garbage collected, and
    never while a call still uses it.
    """

    def __init__(self) -> None:
        ptr = LIB.wb_cancel_new()
        if not ptr:
            raise MemoryError("wb_cancel_new failed")
        self._handle = NativeHandle(ptr, LIB.wb_cancel_free, "cancel token")
        self._cancelled = False
        self._finalizer = weakref.finalize(self, self._handle.close)
        self._finalizer.atexit = False

    def cancel(self) -> None:
        """Triggers the token. Idempotent; a no-op once the token is freed."""
        self._cancelled = True
        try:
            with self._handle.use(while_closing=True) as ptr:
                LIB.wb_cancel_trigger(ptr)
        except ValueError:
            pass

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "CancelToken":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self._cancelled})"


class _CallsInFlight:
    """The long calls running now. At interpreter exit they are told to stop
    (their callback returns non-zero) and waited for, bounded: a daemon
    thread still inside a call once the interpreter finalizes is killed by
    Python as soon as the library calls back into it, and that kill (a
    forced unwind through the library's frames) aborts the whole process."""

    EXIT_WAIT_S = 10.0

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.exiting = False

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        with self.cond:
            self.count += 1
        try:
            yield
        finally:
            with self.cond:
                self.count -= 1
                self.cond.notify_all()

    def stop_all_and_wait(self) -> None:
        self.exiting = True
        with self.cond:
            self.cond.wait_for(lambda: self.count == 0, self.EXIT_WAIT_S)


CALLS = _CallsInFlight()
atexit.register(CALLS.stop_all_and_wait)


class _Bridge:
    """The C callback of one call (always installed, so that the call can be
    stopped at interpreter exit). It never lets a Python exception reach
    ctypes (which would only print it): the exception is kept, the call is
    told to stop, and :meth:`reraise` raises it once the call has returned."""

    def __init__(self, callback: Optional[ProgressCallback]) -> None:
        self.error: Optional[BaseException] = None
        self.c_function: Any = PROGRESS_FN(self._make_trampoline(callback))

    def _make_trampoline(self, callback: Optional[ProgressCallback]) -> Callable[[Any, Any], int]:
        def trampoline(_userdata: Any, p: "ctypes._Pointer[WbProgress]") -> int:
            if self.error is not None or CALLS.exiting:
                return 1
            if callback is None:
                return 0
            try:
                keep_going = callback(Progress._from_c(p.contents))
            except BaseException as e:  # KeyboardInterrupt too: it must stop the call
                self.error = e
                return 1
            # Exactly False stops (the call fails with WB_CANCELLED); a
            # callback that returns nothing goes on.
            return 1 if keep_going is False else 0

        return trampoline

    def reraise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            try:
                raise error
            finally:
                del error


def lend_token(cancel: Optional[CancelToken]) -> Any:
    """A context manager lending the token's pointer (or None) for one call."""
    if cancel is None:
        return contextlib.nullcontext(None)
    if not isinstance(cancel, CancelToken):
        raise TypeError(f"cancel must be a CancelToken, not {type(cancel).__name__}")
    return cancel._handle.use()

