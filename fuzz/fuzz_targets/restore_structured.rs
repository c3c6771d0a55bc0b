//! Structure-aware: the input is a program of `src/grammar.rs` that builds a
//! hostile gzip+tar archive, which is then restored and checked like any
//! other input (`src/check.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = wings_backup_fuzz::scratch();
    let built = wings_backup_fuzz::grammar::build(data, &wings_backup_fuzz::ctx(scratch));
    scratch.check_restore(&built.archive, built.truncate);
});
