//! One archive operation per process, through the library's public API, so
//! that scripts/bench.sh measures it the way it measures every other tool: as
//! a child process (wall time, CPU time and peak RSS from wait4).
//!
//!     archive create none|best_speed|best_compression SOURCE_DIR ARCHIVE [--progress] [--reuse OLD] [--kernel-copy always|never]
//!     archive extract ARCHIVE DEST_DIR [--path P]...
//!                                           (truncate; DEST_DIR must exist;
//!                                           --path: only that entry)
//!
//! Threads default to the machine's cores, as in the engine. `--progress`
//! passes a progress callback (which makes the library total the tree's size
//! too, for percentages); `--reuse OLD` copies the unchanged members of the
//! earlier archive OLD (which has its index beside it); `--kernel-copy`
//! has those copied by the kernel on any file system, or never (by
//! default: where the file system shares extents). Prints the library's summary JSON. Run without
//! arguments (as `cargo bench` does) it only prints this usage.

use std::path::Path;
use std::process::ExitCode;

use wings_backup::archive::writer::KernelCopy;
use wings_backup::config::CompressionLevel;
use wings_backup::engine::{archive_create, archive_extract, ArchiveOptions};
use wings_backup::ffi::wire;
use wings_backup::progress::{Control, Progress};

const USAGE: &str =
    "usage: archive create none|best_speed|best_compression SOURCE_DIR ARCHIVE [--progress] [--reuse OLD] [--kernel-copy always|never]\n       \
                     archive extract ARCHIVE DEST_DIR [--path P]...";

fn run(args: &[String]) -> wings_backup::Result<Option<String>> {
    let (op, rest) = match args {
        [op, rest @ ..] => (op.as_str(), rest),
        _ => return Ok(None),
    };
    match (op, rest) {
        ("create", [level, source, archive, flags @ ..]) => {
            let (mut progress, mut reuse_from) = (false, None);
            let mut kernel_copy = KernelCopy::default();
            let mut flags = flags.iter();
            while let Some(flag) = flags.next() {
                match flag.as_str() {
                    "--progress" => progress = true,
                    "--reuse" => match flags.next() {
                        Some(old) => reuse_from = Some(std::path::PathBuf::from(old)),
                        None => return Ok(None),
                    },
                    "--kernel-copy" => match flags.next().map(String::as_str) {
                        Some("always") => kernel_copy = KernelCopy::Always,
                        Some("never") => kernel_copy = KernelCopy::Never,
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                }
            }
            let compression_level = CompressionLevel::parse(level).ok_or_else(|| {
                wings_backup::Error::invalid(format!("unknown compression level {level:?}"))
            })?;
            let opts = ArchiveOptions {
                compression_level,
                reuse_from,
                kernel_copy,
                ..ArchiveOptions::default()
            };
            let reports = std::cell::Cell::new(0u64);
            let mut count = |_: &Progress| {
                reports.set(reports.get() + 1);
                true
            };
            let mut ctl = Control::new(None, None);
            if progress {
                ctl = Control::new(None, Some(&mut count));
            }
            let summary = archive_create(Path::new(source), Path::new(archive), &opts, &mut ctl);
            drop(ctl);
            if progress {
                eprintln!("archive: {} progress reports", reports.get());
            }
            summary.map(|s| Some(wire::archive_summary(&s)))
        }
        ("extract", [archive, dest, flags @ ..]) => {
            let mut paths = Vec::new();
            let mut flags = flags.iter();
            while let Some(flag) = flags.next() {
                match (flag.as_str(), flags.next()) {
                    ("--path", Some(p)) => paths.push(p.clone()),
                    _ => return Ok(None),
                }
            }
            let opts = ArchiveOptions {
                compression_level: CompressionLevel::None,
                truncate: true,
                paths,
                ..ArchiveOptions::default()
            };
            archive_extract(
                Path::new(archive),
                Path::new(dest),
                &opts,
                &mut Control::none(),
            )
            .map(|s| Some(wire::restore_summary(&s)))
        }
        _ => Ok(None),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench` (and maybe a filter): nothing to measure.
    let bench_run = args.is_empty() || args[0] == "--bench";
    match run(&args) {
        Ok(Some(summary)) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("{USAGE}");
            if bench_run {
                eprintln!("(scripts/bench.sh runs this binary; see `make bench`)");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("archive: {e}");
            ExitCode::FAILURE
        }
    }
}
