// Scratch tool for development measurements (not part of the product).
use std::os::fd::AsFd;
use wings_backup::archive::writer::{write_archive, WriteOptions};
use wings_backup::config::CompressionLevel;
use wings_backup::ignore::IgnoreRules;
use wings_backup::progress::Control;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let level = match args.get(3).map(|s| s.as_str()) {
        Some("none") => CompressionLevel::None,
        Some("best") => CompressionLevel::BestCompression,
        _ => CompressionLevel::BestSpeed,
    };
    let threads: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(2);
    let root = wings_backup::safe_fs::open_trusted_dir(std::path::Path::new(&args[1])).unwrap();
    let _ = root.as_fd();
    let mut out = std::io::BufWriter::with_capacity(0, std::fs::File::create(&args[2]).unwrap());
    let ignore = IgnoreRules::default();
    let t = std::time::Instant::now();
    let s = write_archive(root, &ignore, &mut out, &WriteOptions { level, threads, write_limit: 0 }, &mut Control::none()).unwrap();
    eprintln!("{:?} size {} sha1 {} entries {} files {} src {} changed {} skipped {}", t.elapsed(), s.size, s.sha1, s.entries, s.files, s.source_bytes, s.changed_count, s.skipped_count);
}
