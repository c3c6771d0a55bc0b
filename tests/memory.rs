//! Memory stays bounded: backing up and restoring a file far larger than any
//! buffer keeps the process's peak RSS small (streaming, no whole-file or
//! whole-archive buffers), and a restore stays within one memory budget
//! whatever size its gzip members claim and however many threads inflate
//! them. Alone in its own test binary so that the peak is this test's; the
//! budget tests measure a child process (this binary run again, selected with
//! `WB_MEMORY_CHILD`), whose peak is the restore's alone.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use wings_backup::config::EngineConfig;
use wings_backup::engine::Engine;
use wings_backup::progress::Control;

#[test]
fn a_large_backup_and_restore_stream() {
    let node = Node::new();
    // 768 MiB of data that compresses (so it goes through the compressor),
    // written as a pattern to keep the test quick.
    let path = node.root().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        for _ in 0..768 {
            f.write_all(&block).unwrap();
        }
    }
    let before = peak_rss_kib();
    node.create(BACKUP, "").unwrap();
    std::fs::remove_file(&path).unwrap();
    node.restore(BACKUP, true).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 768 << 20);
    let grown = peak_rss_kib() - before;
    assert!(grown < 96 * 1024, "peak RSS grew by {grown} KiB");
}

/// What a member of this engine's format claims in its `WB` extra field.
const CLAIM: usize = 16 << 20;
/// The whole process of a restore, library and test harness included.
const GOAL_KIB: i64 = 64 * 1024;

/// One gzip member in the engine's own format (RFC 1952 with the `WB` extra
/// field: the member's length, then its uncompressed length), around a raw
/// deflate `body`, with the trailer's CRC and length as given.
fn wb_member(body: &[u8], crc: u32, data_len: u32) -> Vec<u8> {
    let member_len = (24 + body.len() + 8) as u32;
    let mut m = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3, 12, 0, b'W', b'B', 8, 0];
    m.extend_from_slice(&member_len.to_le_bytes());
    m.extend_from_slice(&data_len.to_le_bytes());
    m.extend_from_slice(body);
    m.extend_from_slice(&crc.to_le_bytes());
    m.extend_from_slice(&data_len.to_le_bytes());
    m
}

/// A member holding `prefix` then zeros up to `len` bytes, deflated as a
/// stream (no buffer of `len` bytes is ever built).
fn zeros_member(prefix: &[u8], len: usize) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let mut crc = crc32fast::Hasher::new();
    z.write_all(prefix).unwrap();
    crc.update(prefix);
    let chunk = vec![0u8; 64 << 10];
    let mut left = len - prefix.len();
    while left > 0 {
        let n = left.min(chunk.len());
        z.write_all(&chunk[..n]).unwrap();
        crc.update(&chunk[..n]);
        left -= n;
    }
    wb_member(&z.finish().unwrap(), crc.finalize(), len as u32)
}

/// The crafted archive: one file of `members * CLAIM - 512` zero bytes, cut
/// into members of 16 MiB each (the most the reader accepts), so the whole
/// archive is a few hundred KiB.
fn big_member_archive(members: usize) -> (Vec<u8>, u64) {
    let file_len = (members * CLAIM - 512) as u64;
    let header = RawTar::default()
        .entry_with_size(b"world.bin", b'0', b"", 0o644, &[], file_len)
        .bytes
        .clone();
    assert_eq!(header.len(), 512);
    let mut archive = zeros_member(&header, CLAIM);
    let middle = zeros_member(&[], CLAIM);
    for _ in 1..members {
        archive.extend_from_slice(&middle);
    }
    // The end-of-archive blocks.
    archive.extend_from_slice(&zeros_member(&[], 1024));
    (archive, file_len)
}

/// An archive whose members each claim 16 MiB but inflate to 17 KiB (their
/// deflate data is real, their lengths are lies): a restore must fail
/// without having set aside 16 MiB for each.
fn lying_archive(members: usize) -> Vec<u8> {
    let mut archive = Vec::new();
    for i in 0..members {
        let data = noise(17 << 10, i as u64);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        let body = z.finish().unwrap();
        archive.extend_from_slice(&wb_member(&body, crc32fast::hash(&data), CLAIM as u32));
    }
    archive
}

/// The child: restores `WB_BACKUPS/<BACKUP>.tar.gz` into `WB_DATA` with
/// `threads` and prints its peak RSS and the outcome.
fn child_restore(threads: &str) {
    let data = PathBuf::from(std::env::var_os("WB_DATA").unwrap());
    let backups = PathBuf::from(std::env::var_os("WB_BACKUPS").unwrap());
    let engine = Engine::new(EngineConfig {
        data_directory: data,
        backup_directory: backups,
        threads: threads.parse().unwrap(),
        ..EngineConfig::default()
    })
    .unwrap();
    let outcome =
        match engine.restore_backup(SERVER, BACKUP, &local_restore(true), &mut Control::none()) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{:?}", e.status),
        };
    println!(
        "\nwb-memory-child: vmhwm_kib={} outcome={outcome}",
        peak_rss_kib()
    );
}

/// Runs this binary's test `name` as a child restoring `archive` with
/// `threads`; returns its peak RSS in KiB and the outcome (`ok` or the
/// error status).
fn restore_in_child(name: &str, node: &Node, archive: &Path, threads: usize) -> (i64, String) {
    std::fs::create_dir_all(node.backups()).unwrap();
    std::fs::copy(archive, node.archive(BACKUP)).unwrap();
    let threads_text = threads.to_string();
    let data = node.dir.join("data");
    let backups = node.backups();
    let line = run_child(
        name,
        &[
            ("WB_MEMORY_CHILD", threads_text.as_ref()),
            ("WB_DATA", data.as_os_str()),
            ("WB_BACKUPS", backups.as_os_str()),
        ],
        &format!("the restore with {threads} threads"),
    );
    (
        field(&line, "vmhwm_kib=").parse().unwrap(),
        field(&line, "outcome="),
    )
}

#[test]
fn members_claiming_16_mib_restore_within_the_budget_at_any_thread_count() {
    if let Ok(threads) = std::env::var("WB_MEMORY_CHILD") {
        return child_restore(&threads);
    }
    // 17 members of 16 MiB (272 MiB of data) in an archive of under 1 MiB.
    let dir = TempDir::new("memory-members");
    let (archive, file_len) = big_member_archive(17);
    assert!(archive.len() < 1 << 20, "{} bytes", archive.len());
    let path = dir.join("crafted.tar.gz");
    std::fs::write(&path, &archive).unwrap();
    for threads in [8, 16, 32] {
        let node = Node::new();
        let (peak, outcome) = restore_in_child(
            "members_claiming_16_mib_restore_within_the_budget_at_any_thread_count",
            &node,
            &path,
            threads,
        );
        assert_eq!(outcome, "ok", "threads {threads}");
        let restored = node.root().join("world.bin");
        assert_eq!(std::fs::metadata(&restored).unwrap().len(), file_len);
        eprintln!("threads {threads}: peak RSS {peak} KiB");
        assert!(
            peak <= GOAL_KIB,
            "a restore with {threads} threads peaked at {peak} KiB"
        );
    }
}

#[test]
fn members_lying_about_their_length_fail_within_the_budget() {
    if let Ok(threads) = std::env::var("WB_MEMORY_CHILD") {
        return child_restore(&threads);
    }
    let dir = TempDir::new("memory-lies");
    let path = dir.join("lying.tar.gz");
    std::fs::write(&path, lying_archive(64)).unwrap();
    let node = Node::new();
    std::fs::write(node.root().join("keep.txt"), b"old").unwrap();
    let (peak, outcome) = restore_in_child(
        "members_lying_about_their_length_fail_within_the_budget",
        &node,
        &path,
        32,
    );
    assert_eq!(outcome, "CorruptArchive");
    assert_eq!(std::fs::read(node.root().join("keep.txt")).unwrap(), b"old");
    eprintln!("lying members, 32 threads: peak RSS {peak} KiB");
    // Less than one claim: no buffer was filled to what a member claimed.
    assert!(peak < 16 * 1024, "peaked at {peak} KiB");
}
