//! The fuzz targets' checks under `cargo test`, without libFuzzer: every
//! input saved in `fuzz/regressions/<target>/` (the crashes `make fuzz`
//! found) is replayed through the same code as the target that found it
//! (`fuzz/src/check.rs`, `fuzz/src/grammar.rs`, included here by path), and
//! a fixed pseudo-random sweep of the grammar runs on every test run.

#[allow(dead_code)]
#[path = "../fuzz/src/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "../fuzz/src/grammar.rs"]
mod grammar;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn ctx(scratch: &check::Scratch) -> grammar::Ctx {
    grammar::Ctx {
        outside: scratch.outside.as_os_str().as_bytes().to_vec(),
    }
}

/// Runs one input the way the target `target` does; the status of a
/// failed restore.
fn replay(scratch: &check::Scratch, target: &str, data: &[u8]) -> Option<wings_backup::Status> {
    match target {
        "restore_bytes" => scratch.check_restore(data, data.len() % 2 == 1),
        "restore_structured" => {
            let built = grammar::build(data, &ctx(scratch));
            scratch.check_restore(&built.archive, built.truncate)
        }
        other => panic!("no fuzz target called {other}"),
    }
}

/// Every saved input: (target, path).
fn saved_inputs() -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut out = Vec::new();
    for target in std::fs::read_dir(&dir)
        .expect("fuzz/regressions exists")
        .flatten()
    {
        let name = target.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(target.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            out.push((name.clone(), f.path()));
        }
    }
    out.sort();
    out
}

/// Replays `inputs`, collecting every failure instead of stopping at the first.
fn replay_all(inputs: &[(String, PathBuf)]) -> Vec<String> {
    let scratch = check::Scratch::new();
    let mut failures = Vec::new();
    for (target, path) in inputs {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replay(&scratch, target, &data)
        }));
        if let Err(p) = outcome.map(|_| ()) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", path.display()));
        }
    }
    failures
}

#[test]
fn every_saved_fuzz_input_passes_the_checks() {
    let inputs = saved_inputs();
    let failures = replay_all(&inputs);
    assert!(
        failures.is_empty(),
        "{} of {} saved inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// The saved input above, asserted precisely: its second entry claims
/// 2^64-1 bytes of data that are not there, so the archive is truncated.
#[test]
fn a_pax_size_of_u64_max_on_a_skipped_entry_is_a_corrupt_archive() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/restore_bytes/pax-size-u64-max-on-skipped-entry.tar.gz"),
    )
    .unwrap();
    let scratch = check::Scratch::new();
    let status = scratch.check_restore(&data, false);
    assert_eq!(status, Some(wings_backup::Status::CorruptArchive));
}

/// A fixed sweep of grammar programs (xorshift bytes), so that the grammar
/// and the checks run on every `cargo test` even where nobody fuzzes.
#[test]
fn a_pseudo_random_sweep_of_the_grammar_passes_the_checks() {
    let scratch = check::Scratch::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..400 {
        let len = (next() % 300) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias half of the programs towards ordinary choices (zeros), so
        // that many archives are nearly valid and get deep into the restore.
        if i % 2 == 0 {
            for b in data.iter_mut() {
                if next() % 3 != 0 {
                    *b = 0;
                }
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replay(&scratch, "restore_structured", &data)
        }));
        let Ok(status) = outcome else {
            panic!("grammar program {i} fails the checks: {data:?}");
        };
        *statuses.entry(format!("{status:?}")).or_insert(0) += 1;
    }
    eprintln!("grammar sweep outcomes (None = restored): {statuses:?}");
    // The sweep must reach both outcomes, or it tests little.
    assert!(
        statuses.contains_key("None"),
        "no program restored: {statuses:?}"
    );
    assert!(statuses.len() > 2, "too little variety: {statuses:?}");
}
