//! Engine options that change how work is done: the write limit, the owner
//! of restored files, compression levels.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;
use wings_backup::config::{CompressionLevel, Owner};

#[test]
fn restored_files_belong_to_the_configured_owner() {
    if is_root() {
        let node = Node::with(|c| {
            c.owner = Some(Owner {
                uid: 4321,
                gid: 4322,
            })
        });
        build_game_tree(&node.root());
        node.create(BACKUP, "").unwrap();
        node.restore(BACKUP, true).unwrap();
        for path in list_all(&node.root()) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "{}", path.display());
        }
        // The root itself keeps its owner (it may be a mount point).
        assert_eq!(std::fs::metadata(node.root()).unwrap().uid(), 0);
    } else {
        eprintln!("skipped: chown needs root");
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn the_write_limit_paces_the_archive() {
    // 1 MiB/s over ~3 MiB of incompressible data: at least ~3 s, and not
    // wildly more (the bound only guards against a hang).
    let node = Node::with(|c| c.write_limit = 1);
    let data = noise(3 << 20, 0x2545_f491_4f6c_dd1d);
    write_file(&node.root().join("noise.bin"), &data, 0o644, 1);
    let start = Instant::now();
    let details = node.create(BACKUP, "").unwrap();
    let secs = start.elapsed().as_secs_f64();
    let size = details.report.size as f64;
    let expected = size / (1024.0 * 1024.0);
    assert!(
        secs >= expected * 0.9,
        "{secs:.2} s for {expected:.2} s worth at the limit"
    );
    assert!(
        secs <= expected * 4.0 + 2.0,
        "{secs:.2} s for {expected:.2} s worth at the limit"
    );
}

#[test]
fn every_compression_level_round_trips() {
    for (level, compression) in [
        ("none", CompressionLevel::None),
        ("best_speed", CompressionLevel::BestSpeed),
        ("best_compression", CompressionLevel::BestCompression),
    ] {
        let node = Node::with(|c| c.compression_level = compression);
        build_game_tree(&node.root());
        let before = snapshot(&node.root());
        let details = node.create(BACKUP, "").unwrap();
        let size = details.report.size;
        let raw: u64 = before
            .values()
            .map(|n| match n {
                Node2::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum();
        if level == "none" {
            assert!(size > raw, "{level}: stored, not compressed");
        } else {
            assert!(size < raw, "{level}: compressed ({size} of {raw})");
        }
        node.restore(BACKUP, true).unwrap();
        assert!(snapshot(&node.root()) == before, "{level}");
    }
}

#[test]
fn a_merge_that_replaces_one_link_of_a_file_counts_the_other_link() {
    // The server holds one 1,000-byte file under two names (a hard link);
    // the archive brings a new `a`. Afterwards the server holds 2,000
    // bytes: over a limit of 1,500, so the merge is refused.
    let node = Node::with(|c| c.disk_limit = 1500);
    let root = node.root();
    write_file(&root.join("a"), &[1u8; 1000], 0o644, 1);
    std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
    let mut t = RawTar::default();
    t.entry(b"a", b'0', b"", 0o644, &[2u8; 1000]);
    let backup = "11111111-2222-4333-8444-555555555555";
    std::fs::write(node.archive(backup), gzip(&t.finish())).unwrap();
    let err = node.restore(backup, false).unwrap_err();
    assert_eq!(err.status, wings_backup::Status::Quota, "{}", err.message);
    assert_eq!(std::fs::read(root.join("a")).unwrap(), vec![1u8; 1000]);
    // Without the second link the same merge fits.
    std::fs::remove_file(root.join("b")).unwrap();
    node.restore(backup, false).unwrap();
    assert_eq!(std::fs::read(root.join("a")).unwrap(), vec![2u8; 1000]);
}
