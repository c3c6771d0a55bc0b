//! Sparse files restore sparse: runs of zeros become holes again, so a
//! server that holds a large sparse file does not need its full size free
//! to be restored.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::*;

/// Whether two files hold the same bytes, read 1 MiB at a time.
fn same_contents(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    // At most 2048 rounds: the files are 1 GiB.
    for _ in 0..2048 {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
    false
}

#[test]
fn a_sparse_gigabyte_restores_sparse_with_the_same_contents() {
    let node = Node::new();
    let path = node.root().join("world/sparse.img");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let size: u64 = 1 << 30;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    // A few KB of data at the start, in the middle (not block-aligned) and
    // at the end.
    f.write_all_at(&noise(3000, 1), 0).unwrap();
    f.write_all_at(&noise(5000, 2), size / 2 + 123).unwrap();
    f.write_all_at(&noise(2000, 3), size - 2000).unwrap();
    drop(f);
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&path) < 1 << 20,
        "the test file is not sparse here"
    );
    node.create(BACKUP, "").unwrap();
    // The original is kept outside the server directory to compare.
    let original = node.dir.join("original.img");
    std::fs::rename(&path, &original).unwrap();
    std::fs::write(node.root().join("world/other"), b"replaced").unwrap();

    node.restore(BACKUP, true).unwrap();
    let restored = allocated(&path);
    eprintln!("a 1 GiB sparse file restored takes {restored} bytes");
    assert!(restored < 4 << 20, "{restored} bytes allocated");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(same_contents(&original, &path), "the contents differ");
    assert!(!node.root().join("world/other").exists());
}

#[test]
fn a_sparse_file_counts_its_full_length_against_the_disk_limit() {
    // The limit counts what the archive holds (the file's length), not the
    // blocks the restored file happens to take.
    let node = Node::with(|c| c.disk_limit = 32 << 20);
    let path = node.root().join("sparse.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    drop(f);
    node.create(BACKUP, "").unwrap();
    std::fs::remove_file(&path).unwrap();
    write_file(&node.root().join("keep.txt"), b"old", 0o644, 1);
    let before = snapshot(&node.root());
    for truncate in [true, false] {
        let err = node.restore(BACKUP, truncate).unwrap_err();
        assert_eq!(err.status, wings_backup::Status::Quota, "{err}");
        assert_eq!(snapshot(&node.root()), before);
    }
}
