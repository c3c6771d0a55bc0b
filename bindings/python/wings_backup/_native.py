"""Finding and loading libwings_backup, and the C prototypes of every call.

Nothing here is public: the rest of the package goes through ``LIB``.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path
from typing import List, Optional, Tuple

#: The ABI this binding was written against (``WB_ABI_VERSION`` in the header).
ABI_VERSION = 1

#: ``wb_http_handle``'s flags (the header's ``WB_HTTP_*``).
HTTP_ASYNC_RESTORE = 1
HTTP_BODY_TOO_LARGE = 2
HTTP_BODY_UNREADABLE = 4
HTTP_BODY_TIMED_OUT = 8

LIBRARY_NAME = "libwings_backup.so"
#: The installed library's SONAME (``make install``), tried last.
SYSTEM_SONAME = "libwings_backup.so.0"
#: The library inside the installed package, without its extension suffix.
BUNDLED_STEM = "libwings_backup"
_HINT = (
    "install the package with pip (`pip install ./bindings/python` builds the library into it), "
    "run `make build` in the source checkout, or set WINGS_BACKUP_LIB to the library's path"
)


class WbProgress(ctypes.Structure):
    """``wb_progress``."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("phase", ctypes.c_uint32),
        ("bytes_done", ctypes.c_uint64),
        ("bytes_total", ctypes.c_uint64),
        ("entries_done", ctypes.c_uint64),
        # Appended after the first release of ABI 1: present when
        # struct_size covers it.
        ("archive_bytes", ctypes.c_uint64),
    ]


#: ``wb_progress_fn``: ``int32_t (*)(void *userdata, const wb_progress *)``.
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(WbProgress))

#: ``wb_log_fn``: ``void (*)(void *userdata, int32_t level, const char *message)``.
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p)

_P = ctypes.c_void_p  # every opaque handle (engine, cancel token, error)
_STR = ctypes.c_char_p  # a borrowed NUL-terminated string, in or out
_OUT = ctypes.POINTER(ctypes.c_void_p)  # `T **`: owned strings come back as plain addresses
_I32 = ctypes.c_int32

# name: (restype, argtypes). Owned `char *` results are declared as void
# pointers so that ctypes does not copy them into bytes and lose the address
# that wb_string_free needs.
_PROTOTYPES = {
    "wb_abi_version": (ctypes.c_uint32, []),
    "wb_version": (_STR, []),
    "wb_deflate_backend": (_STR, []),
    "wb_status_name": (_STR, [_I32]),
    "wb_status_http": (ctypes.c_uint16, [_I32]),
    "wb_error_status": (_I32, [_P]),
    "wb_error_message": (_STR, [_P]),
    "wb_error_free": (None, [_P]),
    "wb_string_free": (None, [_P]),
    "wb_cancel_new": (_P, []),
    "wb_cancel_trigger": (None, [_P]),
    "wb_cancel_free": (None, [_P]),
    "wb_engine_new": (_I32, [_STR, _OUT, _OUT]),
    "wb_engine_free": (None, [_P]),
    "wb_engine_send_pending_reports": (_I32, [_P, _P, _OUT, _OUT]),
    "wb_engine_resend_parked_reports": (_I32, [_P, _OUT]),
    "wb_engine_cancel_all": (None, [_P]),
    "wb_engine_set_logger": (_I32, [_P, LOG_FN, _P, _OUT]),
    "wb_backup_create_check": (_I32, [_P, _STR, _STR, _OUT]),
    "wb_backup_create": (_I32, [_P, _STR, _STR, PROGRESS_FN, _P, _P, _OUT, _OUT]),
    "wb_backup_dry_run": (_I32, [_P, _STR, _STR, _P, _OUT, _OUT]),
    "wb_backup_restore_check": (_I32, [_P, _STR, _STR, _STR, _OUT]),
    "wb_backup_restore": (_I32, [_P, _STR, _STR, _STR, PROGRESS_FN, _P, _P, _OUT]),
    "wb_backup_delete": (_I32, [_P, _STR, _STR, _OUT]),
    "wb_backup_start": (_I32, [_P, _STR, _STR, _OUT]),
    "wb_restore_start": (_I32, [_P, _STR, _STR, _STR, _OUT]),
    "wb_backup_status": (_I32, [_P, _STR, _STR, _OUT, _OUT]),
    "wb_backup_wait": (_I32, [_P, _STR, _STR, ctypes.c_uint64, ctypes.c_uint32, _OUT, _OUT]),
    "wb_backup_list": (_I32, [_P, _STR, _OUT, _OUT]),
    "wb_backup_cancel": (_I32, [_P, _STR, _STR, _OUT]),
    "wb_backups_delete_all": (_I32, [_P, _STR, _OUT, _OUT]),
    "wb_backup_files": (_I32, [_P, _STR, _STR, _STR, _OUT, _OUT]),
    "wb_backup_verify": (_I32, [_P, _STR, _STR, PROGRESS_FN, _P, _P, _OUT, _OUT]),
    "wb_engine_wait_idle": (_I32, [_P, ctypes.c_uint32]),
    "wb_http_handle": (_I32, [_P, _STR, _STR, _STR, _P, ctypes.c_size_t, ctypes.c_uint32, _OUT, _OUT]),
    "wb_http_next_event": (_I32, [_P, _STR, _STR, ctypes.c_uint64, ctypes.c_uint32, _OUT, _OUT]),
    "wb_http_operation_end": (_I32, [_P, _STR, _STR, _STR, ctypes.c_uint32, _OUT, _OUT]),
    "wb_archive_create": (_I32, [_STR, _STR, _STR, PROGRESS_FN, _P, _P, _OUT, _OUT]),
    "wb_archive_dry_run": (_I32, [_STR, _STR, _STR, _P, _OUT, _OUT]),
    "wb_archive_extract": (_I32, [_STR, _STR, _STR, PROGRESS_FN, _P, _P, _OUT, _OUT]),
    "wb_archive_list": (_I32, [_STR, _STR, _OUT, _OUT]),
    "wb_archive_verify": (_I32, [_STR, PROGRESS_FN, _P, _P, _OUT, _OUT]),
    "wb_host_settings": (_STR, []),
    "wb_host_settings_resolve": (_I32, [_STR, _STR, _OUT, _OUT]),
    "wb_host_prepare_directories": (_I32, [_STR, _STR, _OUT, _OUT]),
}


def _bundled(here: Path) -> Path:
    """The library a wheel or ``pip install`` put inside the package.

    setuptools-rust names it like an extension module (``libwings_backup.abi3.so``
    for the abi3 wheel), so every extension suffix of this interpreter is tried;
    the first that exists wins, and the abi3 name stands for all when none does.
    """
    names = [BUNDLED_STEM + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    for name in names:
        if (here / name).is_file():
            return here / name
    return here / (BUNDLED_STEM + ".abi3.so")


def candidate_paths() -> List[Tuple[str, Path]]:
    """Where the library is looked for, in order, with why.

    A path that is not absolute (the system's SONAME) is left to the dynamic
    loader's own search (``ld.so.conf``, ``LD_LIBRARY_PATH``).
    """
    env = os.environ.get("WINGS_BACKUP_LIB")
    if env:
        # An explicit choice is never second-guessed by falling back.
        return [("WINGS_BACKUP_LIB", Path(env))]
    here = Path(__file__).resolve().parent
    return [
        ("bundled in the package", _bundled(here)),
        ("source checkout", here.parent.parent.parent / "target" / "release" / LIBRARY_NAME),
        ("system library", Path(SYSTEM_SONAME)),
    ]


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _loaded_from(lib: ctypes.CDLL, fallback: Path) -> Path:
    """The file the dynamic loader mapped for ``lib`` (found with dladdr), so
    that a library loaded by SONAME still reports a real path."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return fallback
    dladdr.restype = ctypes.c_int
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    address = ctypes.cast(lib.wb_abi_version, ctypes.c_void_p)
    if dladdr(address, ctypes.byref(info)) and info.dli_fname:
        return Path(os.fsdecode(info.dli_fname)).resolve()
    return fallback


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def load() -> Tuple[ctypes.CDLL, Path]:
    """Loads the first library found and checks its ABI, or raises ImportError."""
    tried: List[str] = []
    for origin, path in candidate_paths():
        by_soname = not path.is_absolute() and origin != "WINGS_BACKUP_LIB"
        if not by_soname and not path.is_file():
            tried.append(f"{path} ({origin}): not found")
            continue
        try:
            lib = ctypes.CDLL(str(path))
            abi_version = lib.wb_abi_version
        except (OSError, AttributeError) as e:
            tried.append(f"{path} ({origin}): {e}")
            continue
        # The ABI is checked before anything else is looked up, so that an
        # old or new library is reported as such rather than as a missing symbol.
        abi_version.restype = ctypes.c_uint32
        abi_version.argtypes = []
        abi = abi_version()
        if abi != ABI_VERSION:
            raise ImportError(
                f"wings_backup: {path} has ABI version {abi}, this binding needs "
                f"{ABI_VERSION}; {_HINT}"
            )
        try:
            _declare(lib)
        except AttributeError as e:
            raise ImportError(f"wings_backup: {path} is incomplete ({e}); {_HINT}") from None
        return lib, (_loaded_from(lib, path) if by_soname else path)
    raise ImportError(
        "wings_backup: cannot load libwings_backup: " + "; ".join(tried) + f". To fix: {_HINT}"
    )


LIB, LIBRARY_PATH = load()


def take_string(ptr: Optional[int]) -> Optional[str]:
    """Copies an owned string the library handed out, then frees it."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        LIB.wb_string_free(ptr)
