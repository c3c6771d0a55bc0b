//! Memory stays bounded: backing up and restoring a file far larger than any
//! buffer keeps the process's peak RSS small (streaming, no whole-file or
//! whole-archive buffers). Alone in its own test binary so that the peak is
//! this test's.

mod common;

use common::*;

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_large_backup_and_restore_stream() {
    let node = Node::new();
    // 768 MiB of data that compresses (so it goes through the compressor),
    // written as a pattern to keep the test quick.
    let path = node.root().join("big.bin");
    {
        use std::io::Write;
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
