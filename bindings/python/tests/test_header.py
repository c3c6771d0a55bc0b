"""The binding's hand-written tables against include/wings_backup.h: status
codes, phases and the ABI version, and the ctypes prototype of every
function (argument count and types, return type) and of wb_progress. A
change to the C ABI that the binding does not follow fails here."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import wings_backup as wb
from wings_backup import _native, errors, progress

HEADER = Path(__file__).resolve().parents[3] / "include" / "wings_backup.h"


@pytest.fixture(scope="module")
def header() -> str:
    if not HEADER.is_file():
        pytest.skip(f"no C header at {HEADER} (not a source checkout)")
    text = HEADER.read_text()
    # Comments out, so that prototypes quoted in doc comments do not count.
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def defines(header: str) -> Dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define (WB_\w+) (\d+)$", header, re.M)}


def test_status_codes_match_the_header(header: str) -> None:
    ours = {f"WB_{s.name}": int(s) for s in wb.Status}
    theirs = {
        name: value
        for name, value in defines(header).items()
        if not name.startswith(("WB_VERSION_", "WB_ABI_", "WB_PHASE_", "WB_LOG_", "WB_HTTP_"))
    }
    assert len(theirs) >= 11, "the header's statuses were not found"
    assert ours == theirs
    # Every failure status has its exception class, named as the library names it.
    for s in wb.Status:
        if s != wb.Status.OK:
            assert s in errors._CLASSES, s
        assert errors.error_for(int(s), "m").status_name == f"WB_{s.name}"


def test_phases_and_abi_version_match_the_header(header: str) -> None:
    found = defines(header)
    assert _native.ABI_VERSION == found["WB_ABI_VERSION"]
    ours = {f"WB_PHASE_{p.name}": int(p) for p in progress.Phase}
    theirs = {name: v for name, v in found.items() if name.startswith("WB_PHASE_")}
    assert theirs and ours == theirs


def test_log_levels_match_the_header(header: str) -> None:
    import logging

    from wings_backup import engine

    theirs = {name: v for name, v in defines(header).items() if name.startswith("WB_LOG_")}
    names = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
    assert {f"WB_LOG_{k}": v for k, v in names.items()}.keys() == theirs.keys()
    assert {theirs[f"WB_LOG_{k}"]: v for k, v in names.items()} == engine._LOG_LEVELS


def test_http_flags_match_the_header(header: str) -> None:
    theirs = {name: v for name, v in defines(header).items() if name.startswith("WB_HTTP_")}
    ours = {f"WB_{name}": getattr(_native, name) for name in dir(_native) if name.startswith("HTTP_")}
    assert len(theirs) == 4 and ours == theirs


_P = ctypes.c_void_p
_INTEGERS = {
    "size_t": ctypes.c_size_t,
    "int32_t": ctypes.c_int32,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
}


def ctype_of(c_type: str, returned: bool = False) -> Optional[type]:
    """The ctypes type the binding must use for a C type of the header.

    Borrowed strings (`const char *`) are c_char_p; every other pointer is a
    plain address (owned strings too, so that wb_string_free gets the
    address back), and `T **` outputs are pointers to addresses."""
    t = " ".join(c_type.replace("*", " * ").split())
    if t == "void" and returned:
        return None
    if t in _INTEGERS:
        return _INTEGERS[t]
    if t == "wb_progress_fn":
        return _native.PROGRESS_FN
    if t == "wb_log_fn":
        return _native.LOG_FN
    if t == "const char *":
        return ctypes.c_char_p
    if t.endswith("* *"):
        return ctypes.POINTER(_P)
    if t.endswith("*"):
        return _P
    raise AssertionError(f"no ctypes mapping for the C type {c_type!r}")


def split_declaration(decl: str) -> Tuple[str, str]:
    """`const struct wb_error *err` -> (`const wb_error *`, `err`)."""
    decl = " ".join(decl.replace("struct ", "").split())
    m = re.fullmatch(r"(.*?[\s*])(\w+)", decl)
    assert m, decl
    return m[1].strip(), m[2]


def functions(header: str) -> Dict[str, Tuple[str, List[str]]]:
    found = {}
    for m in re.finditer(r"^([A-Za-z_][\w\s*]*?)\b(wb_\w+)\(([^)]*)\);", header, re.M | re.S):
        restype = " ".join(m[1].replace("struct ", "").split())
        params = " ".join(m[3].split())
        args = [] if params in ("", "void") else [split_declaration(p)[0] for p in params.split(",")]
        found[m[2]] = (restype, args)
    return found


def test_every_function_has_the_headers_prototype(header: str) -> None:
    found = functions(header)
    assert len(found) >= 20, "the header's functions were not found"
    assert sorted(_native._PROTOTYPES) == sorted(found)
    for name, (c_restype, c_args) in found.items():
        restype, argtypes = _native._PROTOTYPES[name]
        assert restype is ctype_of(c_restype, returned=True), f"{name} returns {c_restype}"
        assert len(argtypes) == len(c_args), f"{name} takes {len(c_args)} arguments"
        for i, (ours, theirs) in enumerate(zip(argtypes, c_args)):
            assert ours is ctype_of(theirs), f"{name} argument {i + 1} is {theirs}"


def test_progress_struct_and_callback_match_the_header(header: str) -> None:
    body = re.search(r"typedef struct wb_progress \{(.*?)\} wb_progress;", header, re.S)
    assert body
    fields = [split_declaration(f) for f in body[1].split(";") if f.strip()]
    assert [(n, _INTEGERS[t]) for t, n in fields] == list(_native.WbProgress._fields_)
    callback = re.search(r"typedef (\w+) \(\*wb_progress_fn\)\(([^)]*)\);", header)
    assert callback
    args = [split_declaration(a)[0] for a in callback[2].split(",")]
    assert args == ["void *", "const wb_progress *"]
    assert _native.PROGRESS_FN._restype_ is _INTEGERS[callback[1]]
    assert list(_native.PROGRESS_FN._argtypes_) == [_P, ctypes.POINTER(_native.WbProgress)]
