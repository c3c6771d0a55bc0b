//! `wb_engine_set_logger`: where the engine's log messages go.

use std::ffi::{c_char, c_void, CString};

use super::engine::{engine_ref, wb_engine};
use super::error::wb_error;
use super::support::boundary;
use crate::log::Level;

/// Log level of a message: detail for debugging.
pub const WB_LOG_DEBUG: i32 = 0;
/// Log level of a message: something worth knowing happened.
pub const WB_LOG_INFO: i32 = 1;
/// Log level of a message: something went wrong and is being dealt with
/// (a Panel call retried, a report parked in `.pending`).
pub const WB_LOG_WARN: i32 = 2;
/// Log level of a message: something failed.
pub const WB_LOG_ERROR: i32 = 3;

/// A log callback: `level` is one of `WB_LOG_*`, `message` one line of
/// UTF-8 without credentials (valid only during the call).
pub type wb_log_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: i32, message: *const c_char)>;

/// The callback and its userdata, shared with the engine's threads.
struct CLogger {
    callback: unsafe extern "C" fn(*mut c_void, i32, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: `wb_engine_set_logger` documents that the callback may be called
// from any thread with this userdata; keeping it usable so is the caller's
// side of the contract.
unsafe impl Send for CLogger {}
// SAFETY: as above; the engine never touches `userdata` itself.
unsafe impl Sync for CLogger {}

impl CLogger {
    fn call(&self, level: Level, message: &str) {
        let text = CString::new(message.replace('\0', "")).unwrap_or_default();
        // SAFETY: the caller's callback and userdata, valid until a later
        // `wb_engine_set_logger` or `wb_engine_free` returns (by contract).
        unsafe { (self.callback)(self.userdata, level as i32, text.as_ptr()) };
    }
}

/// Sets the engine's log callback (NULL: no logging, the default). The
/// engine logs every retry of a Panel call at `WB_LOG_WARN` as it happens
/// (with the attempt number, and the URL without credentials or query
/// string), reports parked in `.pending`, and a few events at `WB_LOG_INFO`.
/// What it logged before the first callback was set (at its start: the
/// recovery of interrupted restores) is handed to that callback, up to 100
/// messages, before this returns.
///
/// The callback may be called from any thread, including the engine's
/// reporter thread, and from several at once; it must not call back into
/// the library. `userdata` must stay valid until the callback is replaced
/// by another `wb_engine_set_logger` or the engine is freed: once either
/// returns, the previous callback is not running and is never called again.
#[no_mangle]
pub unsafe extern "C" fn wb_engine_set_logger(
    engine: *const wb_engine,
    callback: wb_log_fn,
    userdata: *mut c_void,
    err: *mut *mut wb_error,
) -> i32 {
    boundary(err, || {
        let engine = engine_ref(engine)?;
        let sink = callback.map(|callback| {
            let logger = CLogger { callback, userdata };
            Box::new(move |level: Level, message: &str| logger.call(level, message))
                as crate::log::Sink
        });
        engine.set_logger(sink);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_core_levels() {
        assert_eq!(WB_LOG_DEBUG, Level::Debug as i32);
        assert_eq!(WB_LOG_INFO, Level::Info as i32);
        assert_eq!(WB_LOG_WARN, Level::Warn as i32);
        assert_eq!(WB_LOG_ERROR, Level::Error as i32);
    }
}
