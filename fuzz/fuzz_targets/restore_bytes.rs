//! Arbitrary bytes as the `.tar.gz` stream of a restore (truncating when the
//! input's length is odd, merging when it is even). See `src/check.rs` for
//! what is asserted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = wings_backup_fuzz::scratch();
    scratch.check_restore(data, data.len() % 2 == 1);
});
