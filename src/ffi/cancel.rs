//! `wb_cancel`: a token that stops a running call.

use crate::progress::CancelToken;

/// A cancel token. Trigger it from any thread; a call given it stops
/// promptly with `WB_CANCELLED`. One token may serve several calls.
pub struct wb_cancel {
    pub(crate) token: CancelToken,
}

/// A new, untriggered token (NULL only if out of memory).
#[no_mangle]
pub extern "C" fn wb_cancel_new() -> *mut wb_cancel {
    Box::into_raw(Box::new(wb_cancel {
        token: CancelToken::new(),
    }))
}

/// Triggers the token. Safe from any thread at any time while the token is
/// alive; NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_cancel_trigger(cancel: *const wb_cancel) {
    // SAFETY: NULL or a live token from `wb_cancel_new`.
    if let Some(c) = unsafe { cancel.as_ref() } {
        c.token.trigger();
    }
}

/// Frees a token. No call may still be using it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn wb_cancel_free(cancel: *mut wb_cancel) {
    if !cancel.is_null() {
        // SAFETY: a pointer from `wb_cancel_new`, freed once.
        drop(unsafe { Box::from_raw(cancel) });
    }
}

pub(crate) fn token<'a>(cancel: *const wb_cancel) -> Option<&'a CancelToken> {
    // SAFETY: NULL or a token the caller keeps alive for the whole call.
    unsafe { cancel.as_ref() }.map(|c| &c.token)
}
