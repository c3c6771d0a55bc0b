//! Ignore rules written by the server's user cannot stall a backup: a glob
//! that makes a backtracking matcher take exponential time is matched in time
//! bounded by its length times the path's, and a cancel stops a walk that is
//! busy matching many patterns against many entries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::TempDir;
use wings_backup::engine::{archive_create, ArchiveOptions};
use wings_backup::error::Status;
use wings_backup::progress::{CancelToken, Control};

/// The glob from the report: seven `**` between six `a` components.
const HOSTILE: &str = "**/a/**/a/**/a/**/a/**/a/**/a/**/b";

/// Runs `f` on its own thread; a call still running after `secs` fails the
/// test (the thread is left behind) instead of hanging it.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs}s (hang)"),
    }
}

/// `a/` nested `depth` deep under `root`, with files `b` and `c` at every
/// level below the first if `files`; returns the deepest directory.
fn deep_a_tree(root: &Path, depth: usize, files: bool) -> PathBuf {
    let mut dir = root.to_path_buf();
    for level in 0..depth {
        dir.push("a");
        std::fs::create_dir(&dir).unwrap();
        if files && level > 0 {
            std::fs::write(dir.join("b"), b"b").unwrap();
            std::fs::write(dir.join("c"), b"c").unwrap();
        }
    }
    dir
}

fn options(ignore: &str) -> ArchiveOptions {
    ArchiveOptions {
        ignore: ignore.to_string(),
        ..ArchiveOptions::default()
    }
}

/// Member names as GNU tar lists them, without a trailing `/`.
fn tar_names(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "GNU tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn hostile_glob_over_a_100_deep_tree_backs_up_in_under_a_second() {
    let dir = TempDir::new("ignore-hostile");
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    deep_a_tree(&src, 100, true);
    let archive = dir.join("out.tar.gz");

    let (elapsed, result) = within(60, "the backup", {
        let (src, archive) = (src.clone(), archive.clone());
        move || {
            let start = Instant::now();
            let result = archive_create(&src, &archive, &options(HOSTILE), &mut Control::none());
            (start.elapsed(), result)
        }
    });
    result.expect("the backup succeeds");
    assert!(
        elapsed < Duration::from_secs(1),
        "the backup took {elapsed:?}"
    );

    // git's answer: `b` is ignored below at least six `a` directories.
    let names = tar_names(&archive);
    let mut want = Vec::new();
    let mut path = String::new();
    for level in 0..100 {
        if level > 0 {
            path.push('/');
        }
        path.push('a');
        want.push(path.clone());
        if level > 0 {
            if level + 1 < 6 {
                want.push(format!("{path}/b"));
            }
            want.push(format!("{path}/c"));
        }
    }
    let mut got = names.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn cancel_stops_a_backup_busy_matching_ignore_rules_within_a_second() {
    let dir = TempDir::new("ignore-cancel");
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    let deepest = deep_a_tree(&src, 100, false);
    // Many files, all ignored, in the deepest directory: the walk lists them
    // and matches each against every pattern before it finds the next entry
    // to archive.
    for i in 0..10_000 {
        std::fs::write(deepest.join(format!("f{i}.ign")), b"").unwrap();
    }
    std::fs::write(deepest.join("c"), b"c").unwrap();
    // The last line is tried first: the hostile glob, which stalls a
    // backtracking matcher on the first file below the `a` directories.
    // `*.ign` is the first line, so it is tried last: before it, every entry
    // goes through each of the others, which fill the rest of a 32 KiB
    // ignore file (globs that a quick literal test cannot reject, each
    // matched against most of the path).
    let mut ignore = String::from("*.ign\n");
    let line = "a/**/[bd]\n";
    while ignore.len() + line.len() + HOSTILE.len() < 32 * 1024 {
        ignore.push_str(line);
    }
    ignore.push_str(HOSTILE);
    let archive = dir.join("out.tar.gz");

    let token = Arc::new(CancelToken::new());
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn({
        let (src, archive, token) = (src.clone(), archive.clone(), token.clone());
        move || {
            let _ = started_tx.send(());
            let mut ctl = Control::new(Some(&token), None);
            let result = archive_create(&src, &archive, &options(&ignore), &mut ctl);
            let _ = done_tx.send((Instant::now(), result));
        }
    });
    started_rx.recv().unwrap();
    // Let the walk reach the big directory.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        done_rx.try_recv().is_err(),
        "the backup was over before the cancel: the test proves nothing"
    );
    let cancelled_at = Instant::now();
    token.trigger();
    let (ended_at, result) = match done_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(v) => v,
        Err(_) => panic!("the cancelled backup did not return within 30s (hang)"),
    };
    let waited = ended_at.duration_since(cancelled_at);
    let err = result.expect_err("a cancelled backup fails");
    assert_eq!(err.status, Status::Cancelled, "{err:?}");
    assert!(
        waited < Duration::from_secs(1),
        "the backup returned {waited:?} after the cancel"
    );
    assert!(!archive.exists(), "no archive is left behind");
}
