//! A backup's whole life through the engine: started on an engine thread,
//! its status and progress while it runs, waiting for it, cancelling a
//! queued and a running create and a running restore, listing and deleting
//! every backup of a server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wings_backup::catalog::OpKind;
use wings_backup::operations::OpState;
use wings_backup::Status;

const OTHER: &str = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";
const B2: &str = "2b7d3f52-1c2a-4d5e-8f90-a1b2c3d4e5f6";
const B3: &str = "3b7d3f52-1c2a-4d5e-8f90-a1b2c3d4e5f6";

/// A node whose backups write 1 MiB/s, with `mib` MiB of noise in its server.
fn slow_node(mib: usize, max_running: usize) -> (Node, Arc<wings_backup::engine::Engine>) {
    let node = Node::with(|c| {
        c.write_limit = 1;
        c.max_running_backups = max_running;
        c.compression_level = wings_backup::config::CompressionLevel::None;
    });
    write_file(
        &node.root().join("noise.bin"),
        &noise(mib << 20, 7),
        0o644,
        1_600_000_000,
    );
    let engine = Arc::new(wings_backup::engine::Engine::new(node.engine.config().clone()).unwrap());
    (node, engine)
}

fn wait_state(
    engine: &wings_backup::engine::Engine,
    server: &str,
    uuid: &str,
    done: impl Fn(OpState) -> bool,
) -> wings_backup::operations::OperationRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    loop {
        let r = engine
            .wait_backup(server, uuid, seq, Duration::from_millis(500))
            .unwrap();
        if done(r.state) {
            return r;
        }
        assert!(Instant::now() < deadline, "still {:?}", r.state);
        seq = r.seq;
    }
}

#[test]
fn status_progress_and_wait_of_a_started_backup() {
    let (node, engine) = slow_node(3, 4);
    engine
        .start_backup(SERVER, &create_request(BACKUP, ""))
        .unwrap();
    let first = engine.backup_status(SERVER, BACKUP).unwrap();
    assert!(matches!(first.state, OpState::Running));
    assert!(first.finished_at.is_none());
    // Progress: bytes_done grows while it runs, and the waiter sees it.
    let mut seen = Vec::new();
    let mut seq = first.seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let r = engine
            .wait_backup(SERVER, BACKUP, seq, Duration::from_secs(2))
            .unwrap();
        assert!(r.seq > seq || r.state.finished());
        seq = r.seq;
        if r.phase == "archive" {
            seen.push(r.bytes_done);
        }
        if r.state.finished() {
            break r;
        }
        assert!(Instant::now() < deadline);
    };
    assert_eq!(last.state, OpState::Succeeded, "{:?}", last.error);
    assert!(seen.len() >= 2, "progress seen: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(last.checksum.len(), 40);
    assert_eq!(
        last.size,
        std::fs::metadata(node.archive(BACKUP)).unwrap().len()
    );
    assert!(last.finished_at.is_some());
    // Cancelling a finished backup is a conflict; an unknown one not found.
    assert_eq!(
        engine.cancel_backup(SERVER, BACKUP).unwrap_err().status,
        Status::Conflict
    );
    assert_eq!(
        engine.cancel_backup(SERVER, B2).unwrap_err().status,
        Status::NotFound
    );
    assert_eq!(
        engine.backup_status(SERVER, B2).unwrap_err().status,
        Status::NotFound
    );
    // A fresh engine on the same directory knows the archive still.
    drop(engine);
    let again = node.restart();
    let r = again.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(r.state, OpState::Succeeded);
    assert_eq!(r.size, last.size);
}

#[test]
fn cancel_a_queued_and_a_running_create() {
    let (node, engine) = slow_node(4, 1);
    std::fs::create_dir_all(node.dir.join("data").join(OTHER)).unwrap();
    engine
        .start_backup(SERVER, &create_request(BACKUP, ""))
        .unwrap();
    engine.start_backup(OTHER, &create_request(B2, "")).unwrap();
    assert_eq!(
        engine.backup_status(OTHER, B2).unwrap().state,
        OpState::Queued
    );
    engine.cancel_backup(OTHER, B2).unwrap();
    let q = wait_state(&engine, OTHER, B2, OpState::finished);
    assert_eq!(q.state, OpState::Cancelled);
    assert_eq!(q.error_status, Some(Status::Cancelled));
    // The running one, once it has written some of its archive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.backup_status(SERVER, BACKUP).unwrap().size == 0 {
        assert!(Instant::now() < deadline, "no archive bytes in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    engine.cancel_backup(SERVER, BACKUP).unwrap();
    let r = wait_state(&engine, SERVER, BACKUP, OpState::finished);
    assert_eq!(r.state, OpState::Cancelled);
    // There is no archive to have a size or a checksum.
    assert_eq!((r.size, r.checksum.as_str()), (0, ""));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(engine.wait_idle(Duration::from_secs(5)));
    assert_eq!(node.backup_dir_names(), Vec::<String>::new());
}

#[test]
fn cancel_a_running_restore_leaves_the_files() {
    let (node, engine) = slow_node(4, 4);
    node.create(BACKUP, "").unwrap();
    std::fs::write(node.root().join("noise.bin"), b"the old file").unwrap();
    let before = snapshot(&node.root());
    engine
        .start_restore(SERVER, BACKUP, &local_restore(true))
        .unwrap();
    let r = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(r.state, OpState::Running);
    std::thread::sleep(Duration::from_millis(300));
    engine.cancel_backup(SERVER, BACKUP).unwrap();
    let r = wait_state(&engine, SERVER, BACKUP, OpState::finished);
    assert_eq!(r.state, OpState::Cancelled);
    assert!(engine.wait_idle(Duration::from_secs(5)));
    assert_eq!(snapshot(&node.root()), before);
}

#[test]
fn list_and_delete_all_across_two_servers() {
    let node = Node::new();
    std::fs::create_dir_all(node.dir.join("data").join(OTHER)).unwrap();
    std::fs::write(node.root().join("a"), b"a").unwrap();
    node.create(BACKUP, "").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    node.create(B2, "").unwrap();
    node.engine
        .create_backup(
            OTHER,
            &create_request(B3, ""),
            &mut wings_backup::progress::Control::none(),
        )
        .unwrap();
    let list = node.engine.list_backups(SERVER).unwrap();
    let uuids: Vec<_> = list.iter().map(|r| r.uuid.as_str()).collect();
    assert_eq!(uuids, [B2, BACKUP]);
    assert!(list
        .iter()
        .all(|r| r.state == OpState::Succeeded && r.server == SERVER));
    assert_eq!(node.engine.delete_all_backups(SERVER).unwrap(), 2);
    assert!(node.engine.list_backups(SERVER).unwrap().is_empty());
    assert!(!node.archive(BACKUP).exists() && !node.archive(B2).exists());
    assert!(node.archive(B3).exists());
    assert_eq!(node.engine.list_backups(OTHER).unwrap().len(), 1);
    assert_eq!(
        node.engine
            .backup_status(SERVER, BACKUP)
            .unwrap_err()
            .status,
        Status::NotFound
    );
}

#[test]
fn a_restarted_engine_lists_and_answers_for_its_backups() {
    let node = Node::new();
    std::fs::create_dir_all(node.dir.join("data").join(OTHER)).unwrap();
    std::fs::write(node.root().join("a"), b"a").unwrap();
    let first = node.create(BACKUP, "").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    node.create(B2, "").unwrap();
    let before = node.engine.list_backups(SERVER).unwrap();
    let again = node.restart();
    let after = again.list_backups(SERVER).unwrap();
    let uuids: Vec<_> = after.iter().map(|r| r.uuid.as_str()).collect();
    assert_eq!(uuids, [B2, BACKUP]);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.state, a.size, &a.checksum, a.files),
            (b.state, b.size, &b.checksum, b.files)
        );
    }
    let st = again.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(st.checksum, first.report.checksum);
    assert_eq!(st.state, OpState::Succeeded);
    // Another server's list does not hold them; its status does not know them.
    assert!(again.list_backups(OTHER).unwrap().is_empty());
    assert_eq!(
        again.backup_status(OTHER, BACKUP).unwrap_err().status,
        Status::NotFound
    );
    assert_eq!(
        again.cancel_backup(SERVER, BACKUP).unwrap_err().status,
        Status::Conflict
    );
    // Deleting them all is remembered too.
    assert_eq!(again.delete_all_backups(SERVER).unwrap(), 2);
    drop(again);
    assert!(node.restart().list_backups(SERVER).unwrap().is_empty());
}

#[test]
fn wait_idle_waits_for_the_running_backup_and_no_thread_holds_the_engine_after() {
    let (node, engine) = slow_node(2, 4);
    engine
        .start_backup(SERVER, &create_request(BACKUP, ""))
        .unwrap();
    assert!(
        !engine.wait_idle(Duration::from_millis(300)),
        "a backup writing 2 MiB at 1 MiB/s is still running"
    );
    assert!(engine.wait_idle(Duration::from_secs(20)));
    let r = engine.backup_status(SERVER, BACKUP).unwrap();
    assert_eq!(r.state, OpState::Succeeded);
    assert!(node.backups().join(format!("{BACKUP}.tar.gz")).is_file());
    // Every thread the engine started has let go of it: the caller's is
    // the last reference.
    assert_eq!(Arc::strong_count(&engine), 1);
}

/// A backup belongs to the server it was created for. Restored onto
/// another server, it is not that server's: deleting all of that server's
/// backups, or deleting it through that server, leaves it; its own server
/// still lists it and sees its newest operation (the restore), which the
/// other server sees too. The same holds after a restart (from the catalog).
#[test]
fn a_backup_restored_onto_another_server_stays_its_own() {
    let node = Node::new();
    write_file(&node.root().join("a.txt"), b"a", 0o644, 1_600_000_000);
    node.create(BACKUP, "").unwrap();
    std::fs::create_dir_all(node.dir.join("data").join(OTHER)).unwrap();
    let restore = wings_backup::request::RestoreRequest {
        paths: vec!["a.txt".into()],
        ..local_restore(false)
    };
    node.engine
        .restore_backup(
            OTHER,
            BACKUP,
            &restore,
            &mut wings_backup::progress::Control::none(),
        )
        .unwrap();
    assert_eq!(
        std::fs::read(node.dir.join("data").join(OTHER).join("a.txt")).unwrap(),
        b"a"
    );
    let restarted = node.restart();
    for engine in [&node.engine, &restarted] {
        let listed = |server: &str| -> Vec<String> {
            engine
                .list_backups(server)
                .unwrap()
                .into_iter()
                .map(|r| r.uuid)
                .collect()
        };
        assert_eq!(listed(SERVER), [BACKUP]);
        assert_eq!(listed(OTHER), Vec::<String>::new());
        for server in [SERVER, OTHER] {
            let r = engine.backup_status(server, BACKUP).unwrap();
            assert_eq!((r.kind, r.server.as_str()), (OpKind::Restore, OTHER));
        }
        assert_eq!(engine.delete_all_backups(OTHER).unwrap(), 0);
        let err = engine.delete_backup(OTHER, BACKUP).unwrap_err();
        assert_eq!(err.status, Status::NotFound);
        assert!(node.archive(BACKUP).exists());
    }
    assert_eq!(restarted.delete_all_backups(SERVER).unwrap(), 1);
    assert!(!node.archive(BACKUP).exists());
}

/// A cancel while a restore is still reading its archive stops it; one
/// that comes once it has begun putting the files in place is refused with
/// 409 (the commit is not undone), and the restore succeeds. Each cancel is
/// sent from the restore's progress callback, as the phase is reported.
#[test]
fn a_restore_is_cancelled_before_its_commit_and_refuses_it_after() {
    use wings_backup::progress::{Control, Phase, Progress};
    let node = Node::new();
    write_file(&node.root().join("a.txt"), b"old", 0o644, 1_600_000_000);
    node.create(BACKUP, "").unwrap();
    for cancel_in in [Phase::Extract, Phase::Commit] {
        write_file(&node.root().join("a.txt"), b"new", 0o644, 1_600_000_001);
        let mut answers = Vec::new();
        let mut callback = |p: &Progress| {
            if p.phase == cancel_in && answers.is_empty() {
                answers.push(
                    node.engine
                        .cancel_backup(SERVER, BACKUP)
                        .map_err(|e| e.status),
                );
            }
            true
        };
        let mut ctl = Control::new(None, Some(&mut callback));
        let result = node
            .engine
            .restore_backup(SERVER, BACKUP, &local_restore(true), &mut ctl);
        let data = std::fs::read(node.root().join("a.txt")).unwrap();
        match cancel_in {
            Phase::Extract => {
                assert_eq!(answers, [Ok(())]);
                assert_eq!(result.unwrap_err().status, Status::Cancelled);
                assert_eq!(data, b"new");
            }
            _ => {
                assert_eq!(answers, [Err(Status::Conflict)]);
                result.unwrap();
                assert_eq!(data, b"old");
            }
        }
    }
}
