//! Memory stays bounded with long paths: a reusing backup of a deep tree,
//! and a paths extract of a browsed archive made elsewhere. Each measures a
//! child process (this binary run again, selected with `WB_MEMORY_CHILD`),
//! and is in a binary of its own so that its setup, done in this process,
//! does not count against `tests/memory.rs`'s whole-process peak.

mod common;

use std::path::PathBuf;

use common::*;
use wings_backup::progress::Control;

/// The child: archives `WB_DATA` into `WB_BACKUPS/new.tar.gz` reusing
/// `WB_BACKUPS/old.tar.gz`, and prints its peak RSS.
fn child_reusing_create() {
    use wings_backup::engine::{archive_create, ArchiveOptions};
    let data = PathBuf::from(std::env::var_os("WB_DATA").unwrap());
    let backups = PathBuf::from(std::env::var_os("WB_BACKUPS").unwrap());
    let opts = ArchiveOptions {
        reuse_from: Some(backups.join("old.tar.gz")),
        ..ArchiveOptions::default()
    };
    let summary = archive_create(
        &data,
        &backups.join("new.tar.gz"),
        &opts,
        &mut Control::none(),
    )
    .unwrap();
    println!(
        "\nwb-memory-child: vmhwm_kib={} outcome=ok reused={}",
        peak_rss_kib(),
        summary.reused_members
    );
}

/// A deep tree (200 directories of 250-byte names: paths of 50 KB) holding
/// 3,000 files, and 3,000 hard links at its top to one of them: a reusing
/// backup's walk, its index and the previous index run thousands of entries
/// ahead, and their paths and link targets are bounded in bytes too, not in
/// entries only.
#[test]
fn a_reusing_backup_of_a_tree_with_long_paths_stays_within_the_budget() {
    use rustix::fs::{openat, Mode, OFlags};
    use wings_backup::engine::{archive_create, ArchiveOptions};
    if std::env::var("WB_MEMORY_CHILD").is_ok() {
        return child_reusing_create();
    }
    let dir = TempDir::new("memory-deep");
    let (src, backups) = (dir.join("src"), dir.join("backups"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&backups).unwrap();
    let fd = deep_dirs(&src, &"d".repeat(250), 200);
    for i in 0..3000 {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        openat(
            &fd,
            format!("f{i:04}").as_str(),
            flags,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
    }
    // Short names that carry the long path as their hard link's target.
    for i in 0..3000 {
        rustix::fs::linkat(
            &fd,
            "f0000",
            rustix::fs::CWD,
            src.join(format!("l{i:04}")).as_path(),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    archive_create(
        &src,
        &backups.join("old.tar.gz"),
        &ArchiveOptions::default(),
        &mut Control::none(),
    )
    .unwrap();
    let line = run_child(
        "a_reusing_backup_of_a_tree_with_long_paths_stays_within_the_budget",
        &[
            ("WB_MEMORY_CHILD", "1".as_ref()),
            ("WB_DATA", src.as_os_str()),
            ("WB_BACKUPS", backups.as_os_str()),
        ],
        "the reusing backup",
    );
    eprintln!("reusing backup of the deep tree: {line}");
    let number = |key: &str| -> i64 { field(&line, key).parse().unwrap() };
    assert!(number("reused=") > 0, "{line}");
    assert!(number("vmhwm_kib=") <= 96 * 1024, "{line}");
}

/// The child: extracts `want.txt` from `WB_BACKUPS/foreign.tar.gz` into
/// `WB_DATA`, and prints its peak RSS.
fn child_paths_extract() {
    use wings_backup::engine::{archive_extract, ArchiveOptions};
    let data = PathBuf::from(std::env::var_os("WB_DATA").unwrap());
    let backups = PathBuf::from(std::env::var_os("WB_BACKUPS").unwrap());
    let opts = ArchiveOptions {
        paths: vec!["want.txt".into()],
        ..ArchiveOptions::default()
    };
    let summary = archive_extract(
        &backups.join("foreign.tar.gz"),
        &data,
        &opts,
        &mut Control::none(),
    )
    .unwrap();
    println!(
        "\nwb-memory-child: vmhwm_kib={} outcome=ok files={}",
        peak_rss_kib(),
        summary.files
    );
}

/// An archive made by GNU tar (one gzip member) of 20,000 files with
/// 3,800-byte paths, browsed (which writes its index beside it): extracting
/// one path streams the archive without loading the index's entries.
#[test]
fn a_paths_extract_of_a_browsed_foreign_archive_does_not_load_its_entries() {
    use rustix::fs::{openat, Mode, OFlags};
    if std::env::var("WB_MEMORY_CHILD").is_ok() {
        return child_paths_extract();
    }
    let dir = TempDir::new("memory-foreign");
    let (src, backups, dest) = (dir.join("src"), dir.join("backups"), dir.join("dest"));
    for d in [&src, &backups, &dest] {
        std::fs::create_dir_all(d).unwrap();
    }
    let deep = deep_dirs(&src, &"n".repeat(250), 15);
    for i in 0..20_000 {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        openat(
            &deep,
            format!("f{i:05}").as_str(),
            flags,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
    }
    std::fs::write(src.join("want.txt"), b"wanted\n").unwrap();
    let archive = backups.join("foreign.tar.gz");
    gnu_tar_gz(&src, &archive);
    wings_backup::engine::archive_list(&archive, "").unwrap();
    assert!(wings_backup::index::path_for(&archive).exists());
    let line = run_child(
        "a_paths_extract_of_a_browsed_foreign_archive_does_not_load_its_entries",
        &[
            ("WB_MEMORY_CHILD", "1".as_ref()),
            ("WB_DATA", dest.as_os_str()),
            ("WB_BACKUPS", backups.as_os_str()),
        ],
        "the extract",
    );
    eprintln!("paths extract of the browsed foreign archive: {line}");
    assert_eq!(field(&line, "files="), "1", "{line}");
    assert_eq!(std::fs::read(dest.join("want.txt")).unwrap(), b"wanted\n");
    let peak: i64 = field(&line, "vmhwm_kib=").parse().unwrap();
    assert!(peak <= 64 * 1024, "{line}");
}
