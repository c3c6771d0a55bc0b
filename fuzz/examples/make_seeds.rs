//! Writes seed archives in the engine's own format (indexed gzip members)
//! into the directory given as the only argument: `scripts/fuzz.sh` adds
//! them to the seed corpus next to GNU tar's, Python's and Go's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use wings_backup::config::CompressionLevel;
use wings_backup::engine::{archive_create, ArchiveOptions};
use wings_backup::progress::Control;

fn tree(root: &Path, big: bool) {
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w("server.properties", b"motd=hello\nmax-players=20\n");
    w("world/level.dat", &[7u8; 700]);
    w(
        &format!("deep/{}/{}.txt", "d".repeat(120), "f".repeat(90)),
        b"deep",
    );
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("world/level.dat", root.join("rel_link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs_link")).unwrap();
    std::fs::hard_link(root.join("world/level.dat"), root.join("hard")).unwrap();
    w("setuid", b"#!/bin/sh\n");
    std::fs::set_permissions(root.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status();
    let _ = status;
    if big {
        // Crosses the 1 MiB block size: two members.
        w("big.bin", &vec![0u8; (1 << 20) + 4096]);
    }
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: make_seeds <dir>");
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();
    let work = out.join(".make-seeds-tree");
    for (name, level, big) in [
        ("ours-best_speed", "best_speed", false),
        ("ours-none", "none", false),
        ("ours-best_compression", "best_compression", false),
        ("ours-two-members", "best_speed", true),
    ] {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        tree(&work, big);
        let opts = ArchiveOptions {
            compression_level: CompressionLevel::parse(level).unwrap(),
            threads: 1,
            ..ArchiveOptions::default()
        };
        let archive = out.join(format!("{name}.tar.gz"));
        let _ = std::fs::remove_file(&archive);
        archive_create(&work, &archive, &opts, &mut Control::none()).unwrap();
    }
    let _ = std::fs::remove_dir_all(&work);
}
