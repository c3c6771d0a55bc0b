//! Support code of the fuzz targets: the checks every input goes through
//! and the grammar of the structure-aware target. Both files are also
//! compiled into `tests/fuzz_regressions.rs`, which replays the saved
//! crashes under `cargo test` without libFuzzer.

pub mod check;
pub mod grammar;

use std::sync::OnceLock;

static SCRATCH: OnceLock<check::Scratch> = OnceLock::new();

/// The scratch directory of this fuzzing process, made once and removed
/// when libFuzzer exits normally (statics are never dropped).
pub fn scratch() -> &'static check::Scratch {
    SCRATCH.get_or_init(|| {
        extern "C" fn remove_scratch() {
            if let Some(s) = SCRATCH.get() {
                let _ = std::fs::remove_dir_all(&s.dir);
            }
        }
        // SAFETY: registers a plain function with no arguments.
        unsafe { libc::atexit(remove_scratch) };
        check::Scratch::new()
    })
}

/// The grammar's view of `scratch`.
pub fn ctx(scratch: &check::Scratch) -> grammar::Ctx {
    use std::os::unix::ffi::OsStrExt;
    grammar::Ctx {
        outside: scratch.outside.as_os_str().as_bytes().to_vec(),
    }
}
