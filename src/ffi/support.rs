//! Helpers shared by the exported functions: the panic boundary, argument
//! conversion and the progress bridge.

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::cancel::{token, wb_cancel};
use super::error::wb_error;
use super::{wb_progress, wb_progress_fn, WB_OK};
use crate::error::{Error, Result};
use crate::progress::{Control, Progress, ProgressFn};

/// Runs `body` behind the panic boundary: clears `*err`, turns an `Err` or a
/// panic into a status and (if `err` is not NULL) an owned `wb_error`.
pub fn boundary(err: *mut *mut wb_error, body: impl FnOnce() -> Result<()>) -> i32 {
    if !err.is_null() {
        // SAFETY: the caller passes NULL or a valid `wb_error **`.
        unsafe { *err = std::ptr::null_mut() };
    }
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::internal(format!("internal error: {what}")))
    });
    match result {
        Ok(()) => WB_OK,
        Err(e) => {
            let status = e.status as i32;
            if !err.is_null() {
                // SAFETY: as above.
                unsafe { *err = wb_error::new_raw(e) };
            }
            status
        }
    }
}

/// A required string argument.
pub fn str_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("`{name}` is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string that outlives the call.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map_err(|_| Error::invalid(format!("`{name}` is not valid UTF-8")))
}

/// A required string argument, its bytes that are not UTF-8 replaced by
/// U+FFFD.
pub fn lossy_arg<'a>(ptr: *const c_char, name: &str) -> Result<std::borrow::Cow<'a, str>> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("`{name}` is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string that outlives the call.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_string_lossy())
}

/// An optional string argument (NULL = absent).
pub fn opt_str_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    str_arg(ptr, name).map(Some)
}

/// Stores an owned C string in `*out` (if `out` is not NULL).
pub fn put_string(out: *mut *mut c_char, value: String) {
    if out.is_null() {
        return;
    }
    let c = CString::new(value.replace('\0', "")).unwrap_or_default();
    // SAFETY: `out` is a valid `char **` by contract.
    unsafe { *out = c.into_raw() };
}

pub fn clear_string(out: *mut *mut c_char) {
    if !out.is_null() {
        // SAFETY: `out` is a valid `char **` by contract.
        unsafe { *out = std::ptr::null_mut() };
    }
}

/// Runs `f` with a `Control` built from a call's progress callback,
/// userdata and cancel token.
pub fn with_control<T>(
    progress: wb_progress_fn,
    userdata: *mut c_void,
    cancel: *const wb_cancel,
    f: impl FnOnce(&mut Control<'_>) -> Result<T>,
) -> Result<T> {
    let mut cb = progress_bridge(progress, userdata);
    let cb_ref = cb.as_mut().map(|f| f as &mut ProgressFn<'_>);
    let mut ctl = Control::new(token(cancel), cb_ref);
    f(&mut ctl)
}

/// Wraps a C progress callback as the core's callback type.
fn progress_bridge(
    cb: wb_progress_fn,
    userdata: *mut c_void,
) -> Option<impl FnMut(&Progress) -> bool> {
    let cb = cb?;
    Some(move |p: &Progress| {
        let c = wb_progress {
            struct_size: std::mem::size_of::<wb_progress>() as u32,
            phase: p.phase as u32,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            entries_done: p.entries_done,
            archive_bytes: p.archive_bytes,
        };
        // SAFETY: the callback and its userdata are the caller's, valid for
        // the duration of the call; `c` lives across the callback.
        unsafe { cb(userdata, &c) == 0 }
    })
}
