//! The catalog of operations (`src/catalog.rs`) on a real database file:
//! records survive a restart, lists are per server and newest first and stay
//! fast and small with 10,000 backups, and no damage to the database (garbage
//! bytes, deletion while open, a read-only or full disk, a second process
//! writing at once, a process that died mid-operation) loses a record or
//! stops the catalog from recording. Children are this binary run again,
//! selected with `WB_CATALOG_CHILD`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::{noise, peak_rss_kib, spawn_test_child, wait_test_child, Mount, TempDir};
use wings_backup::catalog::{
    interrupted_message, scan_archives, Catalog, OpKind, OpState, OperationRecord, DATABASE_NAME,
    UNKNOWN_SERVER,
};
use wings_backup::Status;

const S1: &str = "11111111-1111-4111-8111-111111111111";
const S2: &str = "22222222-2222-4222-8222-222222222222";
const S3: &str = "33333333-3333-4333-8333-333333333333";

/// The `i`-th backup UUID of a test (`tag` keeps tests apart).
fn uuid(tag: u32, i: u32) -> String {
    format!("{tag:08x}-0000-4000-8000-{i:012x}")
}

fn finished(kind: OpKind, uuid: &str, server: &str, started_at: i64) -> OperationRecord {
    OperationRecord {
        state: OpState::Succeeded,
        phase: "done".into(),
        bytes_done: 1000,
        bytes_total: 1000,
        files: 3,
        size: 700,
        checksum: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
        started_at: Some(started_at),
        finished_at: Some(started_at + 500),
        panel_report: Some("sent".into()),
        ..OperationRecord::new(kind, uuid, server, "wings")
    }
}

fn running(kind: OpKind, uuid: &str, server: &str, started_at: i64) -> OperationRecord {
    OperationRecord {
        state: OpState::Running,
        phase: "archive".into(),
        started_at: Some(started_at),
        ..OperationRecord::new(kind, uuid, server, "wings")
    }
}

fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{DATABASE_NAME}.corrupt-")) && !n.ends_with("-wal")
        })
        .collect();
    v.sort();
    v
}

/// Runs this binary's test `name` as a child with `WB_CATALOG_CHILD=dir`,
/// waits for it (at most 120 s) and returns its standard output.
fn run_child(name: &str, dir: &Path) -> String {
    wait_child(spawn_child(name, dir))
}

fn spawn_child(name: &str, dir: &Path) -> std::process::Child {
    spawn_test_child(name, &[("WB_CATALOG_CHILD", dir.as_os_str())])
}

fn wait_child(child: std::process::Child) -> String {
    wait_test_child(child, 120, "the child")
}

fn child_dir() -> Option<PathBuf> {
    std::env::var_os("WB_CATALOG_CHILD").map(PathBuf::from)
}

#[test]
fn records_survive_a_restart_field_for_field() {
    let dir = TempDir::new("catalog-roundtrip");
    let create = OperationRecord {
        error: None,
        adapter: "s3".into(),
        ..finished(OpKind::Create, &uuid(1, 1), S1, 1_700_000_000_000)
    };
    let restore = OperationRecord {
        state: OpState::Failed,
        error: Some("the archive is corrupt: bad gzip header".into()),
        error_status: Some(Status::CorruptArchive),
        panel_report: Some("pending: connection refused".into()),
        ..finished(OpKind::Restore, &uuid(1, 1), S1, 1_700_000_100_000)
    };
    {
        let catalog = Catalog::open(dir.path());
        assert_eq!(catalog.degraded(), None);
        catalog.upsert(&create);
        catalog.upsert(&restore);
        assert_eq!(catalog.last_error(), None);
    }
    let db = dir.join(DATABASE_NAME);
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the database's mode");
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.path(), Some(db));
    // The newest record of the backup is the restore; each is there whole.
    assert_eq!(catalog.get(&uuid(1, 1)), Some(restore.clone()));
    assert_eq!(
        catalog.get_op(OpKind::Create, &uuid(1, 1)),
        Some(create.clone())
    );
    assert_eq!(catalog.list(S1), vec![restore.clone(), create.clone()]);
    assert_eq!(catalog.get(&uuid(1, 2)), None);
    // Serialized with lower-case names, as the API shows them.
    let json = serde_json::to_value(&restore).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["kind"], "restore");
    // An update replaces the record of the same kind and uuid only.
    let cancelled = OperationRecord {
        state: OpState::Cancelled,
        ..restore.clone()
    };
    catalog.upsert(&cancelled);
    assert_eq!(catalog.list(S1), vec![cancelled, create]);
    // No file of the catalog looks like an archive.
    assert!(scan_archives(dir.path()).is_empty());
}

#[test]
fn a_catalog_written_before_statuses_were_kept_opens_and_keeps_them_from_then_on() {
    let dir = TempDir::new("catalog-old-schema");
    let failed = OperationRecord {
        state: OpState::Failed,
        error: Some("the restore would exceed the server's disk limit".into()),
        error_status: Some(Status::Quota),
        ..finished(OpKind::Restore, &uuid(3, 1), S1, 1_700_000_000_000)
    };
    Catalog::open(dir.path()).upsert(&failed);
    // The table as an earlier version made it: no `error_status` column.
    let conn = rusqlite::Connection::open(dir.join(DATABASE_NAME)).unwrap();
    conn.execute_batch("ALTER TABLE operations DROP COLUMN error_status;")
        .unwrap();
    drop(conn);
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.degraded(), None);
    let old = catalog.get(&uuid(3, 1)).unwrap();
    assert_eq!(old.error_status, None);
    assert_eq!(old.status(), Some(Status::Internal));
    catalog.upsert(&failed);
    drop(catalog);
    let reopened = Catalog::open(dir.path()).get(&uuid(3, 1)).unwrap();
    assert_eq!(reopened, failed);
    assert_eq!(reopened.status(), Some(Status::Quota));
}

#[test]
fn lists_are_per_server_and_newest_first() {
    let dir = TempDir::new("catalog-list");
    let catalog = Catalog::open(dir.path());
    let t0 = 1_700_000_000_000;
    // Recorded out of order, on three servers.
    for (i, server) in [(3, S1), (1, S2), (5, S1), (2, S1), (4, S3), (6, S2)] {
        catalog.upsert(&finished(
            OpKind::Create,
            &uuid(2, i),
            server,
            t0 + i as i64 * 1000,
        ));
    }
    // A queued create has no start time: it is the newest, having been
    // recorded last.
    let queued = OperationRecord::new(OpKind::Create, &uuid(2, 7), S1, "wings");
    catalog.upsert(&queued);
    let uuids = |server| {
        catalog
            .list(server)
            .into_iter()
            .map(|r| r.uuid)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uuids(S1),
        vec![uuid(2, 7), uuid(2, 5), uuid(2, 3), uuid(2, 2)]
    );
    assert_eq!(uuids(S2), vec![uuid(2, 6), uuid(2, 1)]);
    assert_eq!(uuids(S3), vec![uuid(2, 4)]);
    assert!(uuids("44444444-4444-4444-8444-444444444444").is_empty());
    assert_eq!(
        catalog
            .active()
            .into_iter()
            .map(|r| r.uuid)
            .collect::<Vec<_>>(),
        vec![uuid(2, 7)]
    );
    // A delete forgets the backup's create and restores.
    catalog.upsert(&finished(OpKind::Restore, &uuid(2, 5), S1, t0 + 9000));
    catalog.delete(&uuid(2, 5));
    assert_eq!(catalog.get(&uuid(2, 5)), None);
    assert_eq!(uuids(S1), vec![uuid(2, 7), uuid(2, 3), uuid(2, 2)]);
    drop(catalog);
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.get(&uuid(2, 5)), None);
    assert_eq!(catalog.list(S1).len(), 3);
}

#[test]
fn progress_is_shown_at_once_and_written_a_few_times_a_second() {
    let dir = TempDir::new("catalog-progress");
    let writer = Catalog::open(dir.path());
    let reader = Catalog::open(dir.path());
    let id = uuid(3, 1);
    writer.upsert(&running(OpKind::Create, &id, S1, 1_700_000_000_000));
    let seen_by_reader = || {
        let r = reader.get(&id).unwrap();
        (r.phase, r.bytes_done, r.bytes_total)
    };
    // The first report of a phase is written at once.
    writer.progress(OpKind::Create, &id, "archive", 10, 10_000);
    assert_eq!(seen_by_reader(), ("archive".to_string(), 10, 10_000));
    // A burst of reports: this process sees each, the database gets none
    // of them until the interval has passed.
    let burst = Instant::now();
    for done in 11..=2000u64 {
        writer.progress(OpKind::Create, &id, "archive", done, 10_000);
        assert_eq!(writer.get(&id).unwrap().bytes_done, done);
    }
    if burst.elapsed() < Duration::from_millis(200) {
        assert_eq!(seen_by_reader(), ("archive".to_string(), 10, 10_000));
    }
    std::thread::sleep(Duration::from_millis(300));
    writer.progress(OpKind::Create, &id, "archive", 5000, 10_000);
    assert_eq!(seen_by_reader(), ("archive".to_string(), 5000, 10_000));
    // A new phase is written at once.
    writer.progress(OpKind::Create, &id, "report", 10_000, 10_000);
    assert_eq!(seen_by_reader(), ("report".to_string(), 10_000, 10_000));
    // What was not written yet is written when the catalog closes.
    writer.progress(OpKind::Create, &id, "report", 10_000, 10_001);
    drop(writer);
    assert_eq!(seen_by_reader(), ("report".to_string(), 10_000, 10_001));
    // The final record replaces the progress.
    let writer = Catalog::open(dir.path());
    let done = finished(OpKind::Create, &id, S1, 1_700_000_000_000);
    writer.upsert(&done);
    assert_eq!(writer.get(&id), Some(done.clone()));
    assert_eq!(reader.get(&id), Some(done));
}

/// The child of the memory test: lists a catalog of 10,000 backups over and
/// over and prints its peak RSS after the first list and after the rest.
fn child_lists(dir: &Path) {
    let catalog = Catalog::open(dir);
    assert_eq!(catalog.list(S1).len(), 10_000);
    let first = peak_rss_kib();
    for round in 0..20u32 {
        assert_eq!(catalog.list(S1).len(), 10_000);
        for i in 0..500 {
            assert!(catalog.get(&uuid(4, round * 500 + i)).is_some());
        }
    }
    // Operations under way, then finished, as a node runs them.
    for i in 0..2000 {
        let id = uuid(5, i);
        catalog.upsert(&running(OpKind::Restore, &id, S2, 1_800_000_000_000));
        catalog.progress(OpKind::Restore, &id, "extract", 1, 2);
        catalog.upsert(&finished(OpKind::Restore, &id, S2, 1_800_000_000_000));
    }
    println!(
        "\nwb-catalog-child: first_kib={first} last_kib={}",
        peak_rss_kib()
    );
}

#[test]
fn ten_thousand_backups_list_fast_in_bounded_memory() {
    if let Some(dir) = child_dir() {
        return child_lists(&dir);
    }
    let dir = TempDir::new("catalog-10k");
    let catalog = Catalog::open(dir.path());
    let t0 = 1_700_000_000_000;
    let start = Instant::now();
    for i in 0..10_000u32 {
        let mut r = finished(OpKind::Create, &uuid(4, i), S1, t0 + i as i64);
        r.error = Some(format!("note {i}"));
        catalog.upsert(&r);
    }
    // Another server's backups are not in the list.
    for i in 0..100u32 {
        catalog.upsert(&finished(OpKind::Create, &uuid(6, i), S2, t0));
    }
    eprintln!("10,100 upserts: {:?}", start.elapsed());
    assert_eq!(catalog.last_error(), None);
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let t = Instant::now();
        let list = catalog.list(S1);
        slowest = slowest.max(t.elapsed());
        assert_eq!(list.len(), 10_000);
        assert_eq!(list[0].uuid, uuid(4, 9999));
        assert_eq!(list[9999].uuid, uuid(4, 0));
        assert!(list.windows(2).all(|w| w[0].started_at > w[1].started_at));
    }
    eprintln!("list of 10,000: {slowest:?} at worst");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    drop(catalog);

    let out = run_child(
        "ten_thousand_backups_list_fast_in_bounded_memory",
        dir.path(),
    );
    let line = out
        .lines()
        .find_map(|l| l.split("wb-catalog-child: ").nth(1))
        .unwrap_or_else(|| panic!("no report from the child: {out}"));
    let field = |key: &str| -> i64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, last) = (field("first_kib="), field("last_kib="));
    eprintln!(
        "peak RSS: {first} KiB after one list, {last} KiB after 20 more and 2,000 operations"
    );
    // The whole process (test harness and library included).
    assert!(last < 64 * 1024, "peak RSS {last} KiB");
    // Repeating lists and recording operations does not grow memory.
    assert!(last - first < 8 * 1024, "grew by {} KiB", last - first);
}

#[test]
fn a_database_of_garbage_is_moved_aside_and_replaced() {
    let dir = TempDir::new("catalog-garbage");
    let garbage = noise(64 << 10, 7);
    std::fs::write(dir.join(DATABASE_NAME), &garbage).unwrap();
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.degraded(), None);
    let aside = corrupt_files(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    let rec = finished(OpKind::Create, &uuid(7, 1), S1, 1);
    catalog.upsert(&rec);
    drop(catalog);
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.get(&uuid(7, 1)), Some(rec));
    assert_eq!(corrupt_files(dir.path()).len(), 1);
}

#[test]
fn a_damaged_database_is_moved_aside_and_replaced() {
    let dir = TempDir::new("catalog-damaged");
    {
        let catalog = Catalog::open(dir.path());
        for i in 0..300 {
            catalog.upsert(&finished(OpKind::Create, &uuid(8, i), S1, i as i64));
        }
    }
    // A real SQLite header, then pages of noise: the file is a database
    // whose pages are damaged.
    let db = dir.join(DATABASE_NAME);
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 16 << 10, "{} bytes", bytes.len());
    let len = bytes.len();
    bytes[4096..len].copy_from_slice(&noise(len - 4096, 9)[..len - 4096]);
    std::fs::write(&db, &bytes).unwrap();
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.degraded(), None);
    assert_eq!(corrupt_files(dir.path()).len(), 1);
    // The new database starts empty and works.
    assert!(catalog.list(S1).is_empty());
    catalog.upsert(&finished(OpKind::Create, &uuid(8, 1000), S1, 1));
    assert_eq!(catalog.list(S1).len(), 1);
    assert_eq!(catalog.last_error(), None);
}

#[test]
fn a_database_deleted_while_open_keeps_every_record() {
    let dir = TempDir::new("catalog-deleted");
    let db = dir.join(DATABASE_NAME);
    let catalog = Catalog::open(dir.path());
    let a = finished(OpKind::Create, &uuid(9, 1), S1, 1);
    catalog.upsert(&a);
    // The database alone, then the database with its -wal and -shm.
    std::fs::remove_file(&db).unwrap();
    let b = finished(OpKind::Create, &uuid(9, 2), S1, 2);
    catalog.upsert(&b);
    assert!(db.exists(), "a new database file");
    assert_eq!(catalog.last_error(), None);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let c = running(OpKind::Restore, &uuid(9, 3), S1, 3);
    catalog.upsert(&c);
    catalog.progress(OpKind::Restore, &uuid(9, 3), "extract", 5, 10);
    assert_eq!(catalog.last_error(), None);
    let other = Catalog::open(dir.path());
    assert_eq!(other.list(S1).len(), 3);
    drop(catalog);
    drop(other);
    let catalog = Catalog::open(dir.path());
    assert_eq!(catalog.get(&uuid(9, 1)), Some(a));
    assert_eq!(catalog.get(&uuid(9, 2)), Some(b));
    let c_now = catalog.get(&uuid(9, 3)).unwrap();
    assert_eq!((c_now.phase.as_str(), c_now.bytes_done), ("extract", 5));
    assert!(corrupt_files(dir.path()).is_empty());
}

/// Records in a catalog that cannot write its file: all kept in memory.
fn records_in_memory(catalog: &Catalog) {
    let r = running(OpKind::Create, &uuid(10, 1), S1, 5);
    catalog.upsert(&r);
    catalog.progress(OpKind::Create, &uuid(10, 1), "archive", 7, 9);
    let got = catalog.get(&uuid(10, 1)).unwrap();
    assert_eq!((got.state, got.bytes_done), (OpState::Running, 7));
    let done = finished(OpKind::Create, &uuid(10, 1), S1, 5);
    catalog.upsert(&done);
    catalog.upsert(&finished(OpKind::Create, &uuid(10, 2), S1, 6));
    assert_eq!(
        catalog
            .list(S1)
            .into_iter()
            .map(|r| r.uuid)
            .collect::<Vec<_>>(),
        vec![uuid(10, 2), uuid(10, 1)]
    );
    catalog.delete(&uuid(10, 2));
    assert_eq!(catalog.list(S1), vec![done]);
    let report = catalog.reconcile(&[]);
    assert!(report.interrupted.is_empty());
}

#[test]
fn a_backup_directory_that_cannot_be_written_leaves_the_catalog_in_memory() {
    // A path below a regular file cannot be a directory, even for root.
    let dir = TempDir::new("catalog-notdir");
    std::fs::write(dir.join("file"), b"x").unwrap();
    let catalog = Catalog::open(&dir.join("file/backups"));
    let why = catalog.degraded().expect("in memory");
    assert!(why.contains("in memory"), "{why}");
    assert_eq!(catalog.path(), None);
    records_in_memory(&catalog);

    // A read-only filesystem.
    let ro = TempDir::new("catalog-ro");
    let Some(_mount) = Mount::tmpfs(&ro.join("backups"), "ro,size=1m") else {
        return;
    };
    let catalog = Catalog::open(&ro.join("backups"));
    let why = catalog.degraded().expect("in memory");
    assert!(why.contains("Read-only"), "{why}");
    records_in_memory(&catalog);
    assert!(std::fs::read_dir(ro.join("backups"))
        .unwrap()
        .next()
        .is_none());
}

/// Fills the filesystem of `dir` with one file, until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![1u8; 64 << 10];
    for _ in 0..1024 {
        if f.write_all(&block).is_err() {
            return path;
        }
    }
    panic!("the filesystem did not fill up");
}

#[test]
fn a_full_disk_loses_no_record_and_stops_nothing() {
    let tmp = TempDir::new("catalog-full");
    let dir = tmp.join("backups");
    let Some(_mount) = Mount::tmpfs(&dir, "size=4m") else {
        return;
    };
    // An archive already there is untouched by anything the catalog does.
    let archive = dir.join(format!("{}.tar.gz", uuid(11, 0)));
    std::fs::write(&archive, noise(100 << 10, 1)).unwrap();

    // Full when the catalog opens: it runs in memory.
    let filler = fill(&dir);
    let catalog = Catalog::open(&dir);
    let why = catalog.degraded().expect("in memory on a full disk");
    assert!(why.contains("full"), "{why}");
    records_in_memory(&catalog);
    assert!(!catalog.retry_file(), "the disk is still full");
    // Space again: what was recorded in memory goes into the file.
    std::fs::remove_file(&filler).unwrap();
    assert!(catalog.retry_file());
    assert_eq!(catalog.degraded(), None);
    drop(catalog);
    let catalog = Catalog::open(&dir);
    // (Its reconcile found no archive for the create.)
    let kept = OperationRecord {
        archive_missing: true,
        ..finished(OpKind::Create, &uuid(10, 1), S1, 5)
    };
    assert_eq!(catalog.list(S1), vec![kept]);
    drop(catalog);

    // Full while it runs: writes fail, records stay in memory, and the
    // first write after space is freed saves them all.
    let _ = std::fs::remove_file(dir.join(DATABASE_NAME));
    let catalog = Catalog::open(&dir);
    assert_eq!(catalog.degraded(), None);
    catalog.upsert(&finished(OpKind::Create, &uuid(11, 1), S1, 1));
    let filler = fill(&dir);
    let big_error = "x".repeat(200 << 10);
    let mut recorded = Vec::new();
    for i in 2..40u32 {
        let mut r = finished(OpKind::Create, &uuid(11, i), S1, i as i64);
        r.state = OpState::Failed;
        r.error = Some(big_error.clone());
        catalog.upsert(&r);
        recorded.push(r);
        if catalog.last_error().is_some() {
            break;
        }
    }
    let err = catalog
        .last_error()
        .expect("a write failed on the full disk");
    assert!(err.contains("full"), "{err}");
    for r in &recorded {
        assert_eq!(catalog.get(&r.uuid).as_ref(), Some(r));
    }
    assert_eq!(catalog.list(S1).len(), recorded.len() + 1);
    std::fs::remove_file(&filler).unwrap();
    catalog.upsert(&finished(OpKind::Create, &uuid(11, 99), S1, 99));
    drop(catalog);
    let catalog = Catalog::open(&dir);
    assert_eq!(catalog.list(S1).len(), recorded.len() + 2);
    for r in &recorded {
        assert_eq!(catalog.get(&r.uuid).as_ref(), Some(r));
    }
    assert_eq!(std::fs::read(&archive).unwrap(), noise(100 << 10, 1));
}

/// The child of the two-process test: records 200 operations of S2, each
/// with progress, while the parent records its own.
fn child_writes(dir: &Path) {
    let catalog = Catalog::open(dir);
    for i in 0..200 {
        let id = uuid(12, i);
        catalog.upsert(&running(OpKind::Create, &id, S2, i as i64));
        catalog.progress(OpKind::Create, &id, "archive", 1, 2);
        catalog.upsert(&finished(OpKind::Create, &id, S2, i as i64));
    }
    assert_eq!(catalog.last_error(), None);
    println!("\nwb-catalog-child: done");
}

#[test]
fn two_processes_and_two_catalogs_write_at_once() {
    if let Some(dir) = child_dir() {
        return child_writes(&dir);
    }
    let dir = TempDir::new("catalog-two");
    let a = Catalog::open(dir.path());
    let child = spawn_child("two_processes_and_two_catalogs_write_at_once", dir.path());
    let b = Catalog::open(dir.path());
    std::thread::scope(|s| {
        for (catalog, server, tag) in [(&a, S1, 13), (&b, S3, 14)] {
            s.spawn(move || {
                for i in 0..200 {
                    let id = uuid(tag, i);
                    catalog.upsert(&running(OpKind::Restore, &id, server, i as i64));
                    catalog.progress(OpKind::Restore, &id, "extract", 1, 2);
                    catalog.upsert(&finished(OpKind::Restore, &id, server, i as i64));
                    // Readers meanwhile.
                    assert!(catalog.get(&id).is_some());
                }
            });
        }
    });
    let out = wait_child(child);
    assert!(out.contains("wb-catalog-child: done"), "{out}");
    assert_eq!(a.last_error(), None);
    assert_eq!(b.last_error(), None);
    let fresh = Catalog::open(dir.path());
    for server in [S1, S2, S3] {
        let list = fresh.list(server);
        assert_eq!(list.len(), 200, "{server}");
        assert!(list.iter().all(|r| r.state == OpState::Succeeded));
    }
}

/// The child of the reconcile test: starts operations and dies without
/// closing its catalog, as a process killed mid-backup does.
fn child_dies_mid_operation(dir: &Path) {
    let catalog = Catalog::open(dir);
    catalog.upsert(&running(OpKind::Create, &uuid(15, 1), S1, 10));
    catalog.upsert(&OperationRecord::new(
        OpKind::Create,
        &uuid(15, 2),
        S1,
        "wings",
    ));
    catalog.upsert(&running(OpKind::Restore, &uuid(15, 3), S2, 12));
    catalog.progress(OpKind::Restore, &uuid(15, 3), "extract", 40, 100);
    println!("\nwb-catalog-child: started");
    std::process::exit(0);
}

#[test]
fn reconcile_fails_what_a_dead_process_left_and_records_unknown_archives() {
    if let Some(dir) = child_dir() {
        return child_dies_mid_operation(&dir);
    }
    let dir = TempDir::new("catalog-reconcile");
    let out = run_child(
        "reconcile_fails_what_a_dead_process_left_and_records_unknown_archives",
        dir.path(),
    );
    assert!(out.contains("wb-catalog-child: started"), "{out}");
    // The dead child's lock file is still there; its lock is not.
    let locks = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".owner-"))
            .count()
    };
    assert_eq!(locks(dir.path()), 1);

    // A live catalog's running operation is not failed by another's start.
    let live = Catalog::open(dir.path());
    live.upsert(&running(OpKind::Create, &uuid(15, 4), S1, 13));

    // Archives: one this catalog knows, one it does not; a succeeded local
    // create whose archive is gone; an s3 create (no local archive); and
    // files that are not archives.
    let known = finished(OpKind::Create, &uuid(15, 5), S1, 20);
    let gone = finished(OpKind::Create, &uuid(15, 6), S1, 21);
    let s3 = OperationRecord {
        adapter: "s3".into(),
        ..finished(OpKind::Create, &uuid(15, 7), S1, 22)
    };
    for r in [&known, &gone, &s3] {
        live.upsert(r);
    }
    std::fs::write(dir.join(format!("{}.tar.gz", uuid(15, 5))), b"k").unwrap();
    let stranger = uuid(15, 8);
    std::fs::write(dir.join(format!("{stranger}.tar.gz")), vec![0u8; 1234]).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_650_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join(format!("{stranger}.tar.gz")))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::write(dir.join("notes.tar.gz"), b"x").unwrap();
    std::fs::write(dir.join(format!(".{stranger}.tar.gz.part-1")), b"x").unwrap();
    std::fs::create_dir(dir.join(format!("{}.tar.gz", uuid(15, 9)))).unwrap();

    let starting = Catalog::open(dir.path());
    let mut archives = scan_archives(dir.path());
    archives.sort();
    assert_eq!(
        archives.iter().map(|a| a.0.clone()).collect::<Vec<_>>(),
        vec![uuid(15, 5), stranger.clone()]
    );
    let report = starting.reconcile(&archives);
    let mut interrupted = report.interrupted.clone();
    interrupted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        interrupted,
        vec![
            (OpKind::Create, uuid(15, 1)),
            (OpKind::Create, uuid(15, 2)),
            (OpKind::Restore, uuid(15, 3)),
        ]
    );
    assert_eq!(report.adopted, vec![stranger.clone()]);
    assert_eq!(report.missing, vec![uuid(15, 6)]);
    // The dead child's lock file is gone, the live ones stay.
    assert_eq!(locks(dir.path()), 2);

    for (kind, id) in &interrupted {
        let r = starting.get_op(*kind, id).unwrap();
        assert_eq!(r.state, OpState::Failed, "{id}");
        assert_eq!(
            r.error.as_deref(),
            Some(interrupted_message(*kind).as_str())
        );
        assert!(r.finished_at.is_some());
    }
    let restore = starting.get(&uuid(15, 3)).unwrap();
    assert_eq!(
        restore.error.as_deref(),
        Some("the node stopped while this restore was running")
    );
    assert_eq!(
        (restore.phase.as_str(), restore.bytes_done),
        ("extract", 40)
    );
    assert_eq!(starting.get(&uuid(15, 4)).unwrap().state, OpState::Running);

    let adopted = starting.get(&stranger).unwrap();
    assert_eq!(
        adopted,
        OperationRecord {
            uuid: stranger.clone(),
            server: UNKNOWN_SERVER.into(),
            kind: OpKind::Create,
            adapter: "wings".into(),
            state: OpState::Succeeded,
            phase: "done".into(),
            bytes_done: 1234,
            bytes_total: 1234,
            files: 0,
            size: 1234,
            checksum: String::new(),
            error: None,
            started_at: None,
            finished_at: Some(1_650_000_000_000),
            panel_report: None,
            archive_missing: false,
            error_status: None,
            seq: 0,
        }
    );
    assert_eq!(starting.list(UNKNOWN_SERVER), vec![adopted]);
    assert!(starting.get(&uuid(15, 6)).unwrap().archive_missing);
    assert!(!starting.get(&uuid(15, 5)).unwrap().archive_missing);
    assert!(!starting.get(&uuid(15, 7)).unwrap().archive_missing);

    // A second start changes nothing; an archive that comes back loses its
    // mark; the live catalog's operation fails once it is gone.
    std::fs::write(dir.join(format!("{}.tar.gz", uuid(15, 6))), b"g").unwrap();
    drop(live);
    let again = starting.reconcile(&scan_archives(dir.path()));
    assert_eq!(again.interrupted, vec![(OpKind::Create, uuid(15, 4))]);
    assert!(again.adopted.is_empty() && again.missing.is_empty());
    assert!(!starting.get(&uuid(15, 6)).unwrap().archive_missing);
    assert_eq!(starting.list(S1).len(), 6);
    assert_eq!(starting.list(S2).len(), 1);
}
