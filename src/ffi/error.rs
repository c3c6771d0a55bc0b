//! `wb_error`, status names and strings the library hands out.

use std::ffi::{c_char, CStr, CString};

use crate::error::{Error, Status};

/// An error: a `WB_*` status and a message. Owned by the caller, freed with
/// `wb_error_free`.
pub struct wb_error {
    status: i32,
    message: CString,
}

impl wb_error {
    pub(crate) fn new_raw(e: Error) -> *mut wb_error {
        let message = CString::new(e.message.replace('\0', "")).unwrap_or_default();
        Box::into_raw(Box::new(wb_error {
            status: e.status as i32,
            message,
        }))
    }
}

/// The status of an error (`WB_INTERNAL` for NULL).
#[no_mangle]
pub unsafe extern "C" fn wb_error_status(err: *const wb_error) -> i32 {
    // SAFETY: NULL or a pointer from this library.
    match unsafe { err.as_ref() } {
        Some(e) => e.status,
        None => Status::Internal as i32,
    }
}

/// The message of an error, valid until `wb_error_free` (an empty string
/// for NULL).
#[no_mangle]
pub unsafe extern "C" fn wb_error_message(err: *const wb_error) -> *const c_char {
    // SAFETY: NULL or a pointer from this library.
    match unsafe { err.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Frees an error. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_error_free(err: *mut wb_error) {
    if !err.is_null() {
        // SAFETY: a pointer from `wb_error::new_raw`, freed once.
        drop(unsafe { Box::from_raw(err) });
    }
}

/// Frees a string returned by the library. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: a pointer from `CString::into_raw` in this library.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The name of a status (`"WB_NOT_FOUND"`), or `"WB_UNKNOWN"`. Static.
#[no_mangle]
pub extern "C" fn wb_status_name(status: i32) -> *const c_char {
    Status::from_code(status)
        .map_or(c"WB_UNKNOWN", Status::c_name)
        .as_ptr()
}

/// The HTTP status a host answers for a status (docs/api.md section 2): 400,
/// 404, 409, 422, 507, 502, 503 or 500 (200 for `WB_OK`, 500 if unknown).
#[no_mangle]
pub extern "C" fn wb_status_http(status: i32) -> u16 {
    Status::from_code(status).map_or(500, |s| s.http_status())
}

/// The library version, e.g. `"0.1.0"`. Static.
#[no_mangle]
pub extern "C" fn wb_version() -> *const c_char {
    static VERSION: &CStr = {
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        }
    };
    VERSION.as_ptr()
}

/// The deflate implementation this library was built with: `"isal"` (ISA-L,
/// the default build) or `"zlib-rs"` (pure Rust, built with cargo's
/// `--no-default-features`). It compresses `best_speed` archives and inflates
/// the library's own archives; both builds read and write the same format.
/// The string is static and borrowed: never free it.
#[no_mangle]
pub extern "C" fn wb_deflate_backend() -> *const c_char {
    crate::archive::gzip::DEFLATE_BACKEND.as_ptr()
}

/// The ABI version of the library (compare with `WB_ABI_VERSION`).
#[no_mangle]
pub extern "C" fn wb_abi_version() -> u32 {
    super::WB_ABI_VERSION
}
