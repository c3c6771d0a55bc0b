//! Verify: a good backup passes; one flipped byte in any gzip member (in
//! its header, in a tar header, in the middle of a file's data) is found
//! and named by member and entry; a truncated archive fails; without an
//! index gzip and tar are still checked; a verify can be cancelled.

mod common;

use std::path::Path;

use common::*;
use wings_backup::config::CompressionLevel;
use wings_backup::engine::{archive_create, archive_verify, ArchiveOptions};
use wings_backup::index::{self, Entry, EntryKind, Index, VerifyReport};
use wings_backup::progress::{CancelToken, Control, Phase, Progress};
use wings_backup::Status;

/// An archive of several members with level `none` (stored deflate
/// blocks, so that a tar byte's place in the file can be computed): big
/// files spanning members, small ones sharing them.
fn several_members(dir: &TempDir) -> (std::path::PathBuf, Index) {
    let src = dir.join("src");
    write_file(&src.join("a.txt"), b"first", 0o644, 1_600_000_000);
    write_file(
        &src.join("big/one.bin"),
        &noise(2_600_000, 1),
        0o600,
        1_600_000_001,
    );
    for i in 0..20 {
        write_file(
            &src.join(format!("small/f{i:02}.txt")),
            format!("small file {i}\n").repeat(50).as_bytes(),
            0o644,
            1_600_000_002,
        );
    }
    write_file(
        &src.join("z/two.bin"),
        &noise(1_300_000, 2),
        0o640,
        1_600_000_003,
    );
    let archive = dir.join("several.tar.gz");
    let opts = ArchiveOptions {
        compression_level: CompressionLevel::None,
        ..ArchiveOptions::default()
    };
    archive_create(&src, &archive, &opts, &mut Control::none()).unwrap();
    let index = Index::load(&index::path_for(&archive)).unwrap().unwrap();
    assert!(index.members.len() >= 4, "{} members", index.members.len());
    (archive, index)
}

/// Where tar byte `at` of member `m` is in the file (stored blocks of at
/// most 65535 bytes, each after a 5-byte header; the member header is 24
/// bytes).
fn file_offset(index: &Index, m: usize, at: u64) -> u64 {
    let member = &index.members[m];
    let within = at - member.tar_offset;
    member.offset + 24 + 5 * (within / 65535 + 1) + within
}

fn try_entry_at(index: &Index, at: u64) -> Option<&Entry> {
    index.entries.iter().find(|e| {
        let start = index.tar_offset(e);
        at >= start && at < start + e.tar_len()
    })
}

fn verify_flipped(archive: &Path, original: &[u8], pos: u64, scratch: &Path) -> VerifyReport {
    let mut bytes = original.to_vec();
    bytes[pos as usize] ^= 0x5a;
    std::fs::write(scratch, &bytes).unwrap();
    std::fs::copy(index::path_for(archive), index::path_for(scratch)).unwrap();
    archive_verify(scratch, &mut Control::none()).unwrap()
}

fn path_of(e: &wings_backup::index::VerifyError) -> String {
    String::from_utf8_lossy(e.path.as_deref().unwrap_or(b"")).into_owned()
}

#[test]
fn a_good_backup_passes() {
    let node = Node::new();
    build_game_tree(&node.root());
    node.create(BACKUP, "").unwrap();
    let archive = node.archive(BACKUP);
    let index = index::load_for(&archive, std::fs::metadata(&archive).unwrap().len()).unwrap();
    let mut reports = Vec::new();
    let mut on_progress = |p: &Progress| {
        reports.push(*p);
        true
    };
    let mut ctl = Control::new(None, Some(&mut on_progress));
    let report = node.engine.verify_backup(SERVER, BACKUP, &mut ctl).unwrap();
    assert!(report.ok, "{:?}", report.errors);
    assert!(report.indexed);
    assert_eq!(report.members, index.members.len() as u64);
    let files: Vec<&Entry> = index
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    assert_eq!(report.files, files.len() as u64);
    assert_eq!(report.bytes, files.iter().map(|e| e.size).sum::<u64>());
    assert_eq!(report.error_count, 0);
    assert_eq!(reports.first().unwrap().phase, Phase::Started);
    assert_eq!(reports.last().unwrap().phase, Phase::Done);
    assert!(reports.iter().any(|p| p.phase == Phase::Extract));
    // Without its index, still good (gzip and tar checked).
    std::fs::remove_file(index::path_for(&archive)).unwrap();
    let report = node
        .engine
        .verify_backup(SERVER, BACKUP, &mut Control::none())
        .unwrap();
    assert!(report.ok && !report.indexed, "{report:?}");
    // No local archive: NotFound.
    let other = "11111111-2222-4333-8444-555555555555";
    let e = node
        .engine
        .verify_backup(SERVER, other, &mut Control::none())
        .unwrap_err();
    assert_eq!(e.status, Status::NotFound);
}

#[test]
fn one_flipped_byte_in_any_member_is_found_and_named() {
    let dir = TempDir::new("verify-flip");
    let (archive, index) = several_members(&dir);
    let original = std::fs::read(&archive).unwrap();
    assert!(archive_verify(&archive, &mut Control::none()).unwrap().ok);
    let scratch = dir.join("scratch.tar.gz");
    for (k, m) in index.members.iter().enumerate() {
        if m.uncompressed == 0 {
            continue;
        }
        // The middle of the member's tar bytes.
        let at = m.tar_offset + m.uncompressed / 2;
        let report = verify_flipped(&archive, &original, file_offset(&index, k, at), &scratch);
        assert!(!report.ok, "member {k}");
        let err = report
            .errors
            .iter()
            .find(|e| e.member == Some(k as u64))
            .unwrap_or_else(|| panic!("member {k} not named: {:?}", report.errors));
        assert_eq!(err.offset, Some(m.offset));
        // (The last member holds only the end-of-archive blocks: no entry.)
        if let Some(entry) = try_entry_at(&index, at) {
            let want = String::from_utf8_lossy(&entry.path).into_owned();
            assert!(
                path_of(err) == want || (err.path.is_none() && err.message.contains(&want)),
                "member {k}: want {want}, got {err:?}"
            );
        } else {
            assert_eq!(
                k,
                index.members.len() - 1,
                "only the last member has no entry"
            );
        }
        // The other members are fine.
        assert!(
            report.errors.iter().all(|e| e.member == Some(k as u64)),
            "{:?}",
            report.errors
        );

        // Its gzip header (the part no CRC covers: the MTIME field).
        let report = verify_flipped(&archive, &original, m.offset + 5, &scratch);
        assert!(!report.ok);
        assert_eq!(
            report.errors[0].member,
            Some(k as u64),
            "{:?}",
            report.errors
        );
        assert!(
            report.errors[0].message.contains("checksum"),
            "{:?}",
            report.errors
        );
    }
}

#[test]
fn a_flipped_tar_header_or_file_byte_names_the_entry() {
    let dir = TempDir::new("verify-entry");
    let (archive, index) = several_members(&dir);
    let original = std::fs::read(&archive).unwrap();
    let scratch = dir.join("scratch.tar.gz");
    // A tar header in the middle of a member, shared with other entries.
    let small = index
        .entries
        .iter()
        .find(|e| e.path == b"small/f10.txt")
        .unwrap();
    let at = index.tar_offset(small) + 10;
    let report = verify_flipped(
        &archive,
        &original,
        file_offset(&index, small.member as usize, at),
        &scratch,
    );
    assert!(!report.ok);
    assert_eq!(report.errors[0].member, Some(small.member as u64));
    assert_eq!(
        path_of(&report.errors[0]),
        "small/f10.txt",
        "{:?}",
        report.errors
    );
    // The middle of a big file's data.
    let big = index
        .entries
        .iter()
        .find(|e| e.path == b"big/one.bin")
        .unwrap();
    let at = index.tar_offset(big) + big.header_len as u64 + big.size / 2;
    let (member, _) = {
        let k = index.members_for(at, at + 1).start;
        (k, ())
    };
    let report = verify_flipped(
        &archive,
        &original,
        file_offset(&index, member, at),
        &scratch,
    );
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].member, Some(member as u64));
    assert_eq!(path_of(&report.errors[0]), "big/one.bin");
    assert!(
        report.errors[0].message.contains("CRC"),
        "{:?}",
        report.errors
    );
}

#[test]
fn without_an_index_damage_is_still_found_by_member() {
    let dir = TempDir::new("verify-noindex");
    let (archive, index) = several_members(&dir);
    let mut bytes = std::fs::read(&archive).unwrap();
    std::fs::remove_file(index::path_for(&archive)).unwrap();
    let k = 2;
    let m = &index.members[k];
    bytes[(m.offset + m.compressed / 2) as usize] ^= 1;
    std::fs::write(&archive, &bytes).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(!report.ok && !report.indexed);
    assert_eq!(
        report.errors[0].member,
        Some(k as u64),
        "{:?}",
        report.errors
    );
    assert_eq!(report.errors[0].offset, Some(m.offset));
    // Every member was still read.
    assert_eq!(report.members, index.members.len() as u64);
}

#[test]
fn a_truncated_archive_fails() {
    let dir = TempDir::new("verify-cut");
    let (archive, index) = several_members(&dir);
    let bytes = std::fs::read(&archive).unwrap();
    let cut_in = index.members.len() / 2;
    let m = &index.members[cut_in];
    // Cut inside a member, and exactly between two members.
    for (cut, member) in [(m.offset + m.compressed / 3, cut_in), (m.offset, cut_in)] {
        std::fs::write(&archive, &bytes[..cut as usize]).unwrap();
        let report = archive_verify(&archive, &mut Control::none()).unwrap();
        assert!(!report.ok, "cut at {cut}");
        assert_eq!(
            report.errors[0].member,
            Some(member as u64),
            "{:?}",
            report.errors
        );
        // Without the index too.
        let saved = std::fs::read(index::path_for(&archive)).unwrap();
        std::fs::remove_file(index::path_for(&archive)).unwrap();
        let report = archive_verify(&archive, &mut Control::none()).unwrap();
        assert!(!report.ok, "cut at {cut}, no index");
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.message.contains("truncated")),
            "{:?}",
            report.errors
        );
        std::fs::write(index::path_for(&archive), saved).unwrap();
    }
}

#[test]
fn a_foreign_archive_with_a_bad_tar_header_fails_by_entry() {
    let dir = TempDir::new("verify-foreign");
    let mut tar = RawTar::default();
    tar.entry(b"one.txt", b'0', b"", 0o644, b"one");
    tar.entry(b"two.txt", b'0', b"", 0o644, b"two");
    let mut raw = tar.finish();
    let archive = dir.join("gnu.tar.gz");
    std::fs::write(&archive, gzip(&raw)).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.members, report.files, report.bytes), (1, 2, 6));
    // The second header's name changed, gzip made anew: only the tar
    // header checksum can tell.
    raw[1024] = b'T';
    std::fs::write(&archive, gzip(&raw)).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(!report.ok);
    assert!(report.errors[0].message.contains("checksum"), "{report:?}");
    assert_eq!(report.errors[0].member, Some(0));
}

#[test]
fn a_stale_index_is_reported_entry_by_entry() {
    let dir = TempDir::new("verify-stale");
    let (archive, _) = several_members(&dir);
    // The index of another archive of the same shape but another mtime.
    let src = dir.join("src");
    set_mtime(&src.join("a.txt"), 1_700_000_000);
    let other = dir.join("other.tar.gz");
    let opts = ArchiveOptions {
        compression_level: CompressionLevel::None,
        ..ArchiveOptions::default()
    };
    archive_create(&src, &other, &opts, &mut Control::none()).unwrap();
    std::fs::copy(index::path_for(&other), index::path_for(&archive)).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(!report.ok);
    let entry = report
        .errors
        .iter()
        .find(|e| e.message.contains("mtime"))
        .unwrap_or_else(|| panic!("{:?}", report.errors));
    assert_eq!(path_of(entry), "a.txt");
    assert_eq!(entry.member, Some(0));
}

#[test]
fn a_verify_can_be_cancelled() {
    let dir = TempDir::new("verify-cancel");
    let (archive, _) = several_members(&dir);
    let token = CancelToken::new();
    token.trigger();
    let mut ctl = Control::new(Some(&token), None);
    let err = archive_verify(&archive, &mut ctl).unwrap_err();
    assert_eq!(err.status, Status::Cancelled);
    // By the progress callback, part way.
    let mut seen = 0;
    let mut stop = |p: &Progress| {
        if p.phase == Phase::Extract {
            seen += 1;
        }
        seen < 1
    };
    let mut ctl = Control::new(None, Some(&mut stop));
    let err = archive_verify(&archive, &mut ctl).unwrap_err();
    assert_eq!(err.status, Status::Cancelled);
}

#[test]
fn a_large_single_member_archive_is_indexed_and_verified_as_a_stream() {
    // GNU tar's one gzip member, inflating to more than a member of ours
    // may hold (16 MiB): read as a stream, in browse and in verify.
    let dir = TempDir::new("verify-gnu-big");
    let src = dir.join("src");
    write_file(
        &src.join("zeros.bin"),
        &vec![0u8; 20 << 20],
        0o644,
        1_600_000_000,
    );
    write_file(
        &src.join("after/x.txt"),
        b"after the big file",
        0o644,
        1_600_000_001,
    );
    let archive = dir.join("gnu.tar.gz");
    gnu_tar_gz(&src, &archive);
    let listed = wings_backup::engine::archive_list(&archive, "after").unwrap();
    assert_eq!(listed.len(), 1);
    let len = std::fs::metadata(&archive).unwrap().len();
    let index = index::load_for(&archive, len).expect("an index written");
    assert_eq!(index.members.len(), 1);
    assert!(index.members[0].uncompressed > 20 << 20);
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(report.ok && report.indexed, "{report:?}");
    assert_eq!((report.members, report.files), (1, 2));
    // A flipped byte in the deflate data of the one member.
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&archive, &bytes).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(!report.ok);
    assert_eq!(report.errors[0].member, Some(0), "{:?}", report.errors);
    assert_eq!(report.errors[0].offset, Some(0));
}

/// An archive whose every byte is sound but whose names a restore refuses
/// (an absolute path, one climbing out, a hard link leaving the root, an
/// entry below the archive's own symlink, one replacing the root) does not
/// pass: each such entry is an error naming it, with the restore's reason,
/// and a restore of the archive is indeed refused. A symlink pointing
/// anywhere, with nothing written through it, and a FIFO below it, pass.
#[test]
fn entries_a_restore_refuses_are_errors() {
    let dir = TempDir::new("verify-unsafe");
    let mut tar = RawTar::default();
    tar.entry(b"ok.txt", b'0', b"", 0o644, b"fine");
    tar.entry(b"ln", b'2', b"/etc", 0o777, b"");
    tar.entry(b"ln/fifo", b'6', b"", 0o644, b"");
    let archive = dir.join("clean.tar.gz");
    std::fs::write(&archive, gzip(&tar.finish())).unwrap();
    let report = archive_verify(&archive, &mut Control::none()).unwrap();
    assert!(report.ok, "{report:?}");
    let hostile: [(&[u8], u8, &[u8], &str); 6] = [
        (b"/abs.txt", b'0', b"", "absolute paths are not allowed"),
        (b"a/../../up.txt", b'0', b"", "leaves the server directory"),
        (b"hl", b'1', b"../outside", "hard link target leaves"),
        (
            b"ln/pwn.txt",
            b'0',
            b"",
            "through a symlink from the archive",
        ),
        (b"./", b'0', b"", "replace the server directory itself"),
        (
            b"ln2/../ln/x",
            b'5',
            b"",
            "through a symlink from the archive",
        ),
    ];
    for (name, kind, link, why) in hostile {
        let mut t = RawTar::default();
        t.entry(b"ok.txt", b'0', b"", 0o644, b"fine");
        t.entry(b"ln", b'2', b"/etc", 0o777, b"");
        t.entry(name, kind, link, 0o644, b"");
        let archive = dir.join("hostile.tar.gz");
        std::fs::write(&archive, gzip(&t.finish())).unwrap();
        let what = String::from_utf8_lossy(name);
        let report = archive_verify(&archive, &mut Control::none()).unwrap();
        assert!(!report.ok, "{what}: {report:?}");
        assert_eq!(report.error_count, 1, "{what}: {report:?}");
        let e = &report.errors[0];
        assert_eq!(e.path.as_deref(), Some(name), "{what}: {report:?}");
        assert!(e.message.contains(why), "{what}: {}", e.message);
        let dest = dir.join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let refused = wings_backup::engine::archive_extract(
            &archive,
            &dest,
            &ArchiveOptions::default(),
            &mut Control::none(),
        )
        .unwrap_err();
        assert_eq!(refused.status, Status::UnsafeEntry, "{what}: {refused}");
        assert!(refused.message.contains(why), "{what}: {}", refused.message);
        std::fs::remove_dir_all(&dest).unwrap();
    }
}
