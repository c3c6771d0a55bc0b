//! Nothing lost: failed or cancelled restores leave the server's files as
//! they were, cancelled creates leave no archive and no temporary file, and
//! a restore a crash interrupted is finished (or undone) at the next start.

mod common;

use common::*;
use wings_backup::progress::{CancelToken, Control, Phase, Progress};
use wings_backup::Status;

fn big_tree(node: &Node, files: usize) {
    for i in 0..files {
        let data: Vec<u8> = (0..200_000u32)
            .map(|j| ((i as u32 * 31 + j * 7) % 253) as u8)
            .collect();
        write_file(
            &node.root().join(format!("d{}/f{i}", i % 7)),
            &data,
            0o644,
            1_600_000_000,
        );
    }
}

#[test]
fn a_truncating_restore_of_an_archive_corrupt_near_its_end_keeps_every_file() {
    let node = Node::new();
    big_tree(&node, 30);
    node.create(BACKUP, "").unwrap();
    let mut bytes = std::fs::read(node.archive(BACKUP)).unwrap();
    write_file(
        &node.root().join("changed-after-backup.txt"),
        b"new",
        0o644,
        1_700_000_000,
    );
    let before = snapshot(&node.root());
    let near_end = bytes.len() - 100;
    bytes[near_end] ^= 0xff;
    std::fs::write(node.archive(BACKUP), &bytes).unwrap();
    let err = node.restore(BACKUP, true).unwrap_err();
    assert_eq!(err.status, Status::CorruptArchive, "{}", err.message);
    assert_eq!(snapshot(&node.root()), before);
}

fn create_with(node: &Node, uuid: &str, ctl: &mut Control<'_>) -> wings_backup::Result<String> {
    node.engine
        .create_backup(SERVER, &create_request(uuid, ""), ctl)
        .map(|d| d.report.checksum)
}

/// Runs `work` with a progress callback that, at the first report of
/// `phase`, lets `other` run on another thread and waits for it to finish:
/// whatever `other` does happens while the call is certainly in that phase.
fn while_in_phase<T: Send>(
    phase: Phase,
    work: impl FnOnce(&mut Control<'_>) -> wings_backup::Result<String>,
    cancel: Option<&CancelToken>,
    other: impl FnOnce() -> T + Send,
) -> (wings_backup::Result<String>, Option<T>) {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let helper = s.spawn(move || {
            go_rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .ok()?;
            let out = other();
            let _ = done_tx.send(());
            Some(out)
        });
        let mut fired = false;
        let mut cb = |p: &Progress| {
            if p.phase == phase && !fired {
                fired = true;
                let _ = go_tx.send(());
                done_rx
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .unwrap();
            }
            true
        };
        let mut ctl = Control::new(cancel, Some(&mut cb));
        let result = work(&mut ctl);
        drop(ctl);
        (result, helper.join().unwrap())
    })
}

#[test]
fn a_create_stopped_by_its_progress_callback_leaves_nothing() {
    let node = Node::new();
    big_tree(&node, 20);
    let mut calls = 0;
    let mut cb = |p: &Progress| {
        calls += 1;
        p.phase != Phase::Archive
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let err = create_with(&node, BACKUP, &mut ctl).unwrap_err();
    assert_eq!(err.status, Status::Cancelled);
    assert!(calls >= 2);
    assert_eq!(node.backup_dir_names(), Vec::<String>::new());
}

#[test]
fn a_create_cancelled_from_another_thread_leaves_nothing() {
    let node = Node::new();
    big_tree(&node, 20);
    let token = CancelToken::new();
    let (result, _) = while_in_phase(
        Phase::Archive,
        |ctl| create_with(&node, BACKUP, ctl),
        Some(&token),
        || token.trigger(),
    );
    assert_eq!(result.unwrap_err().status, Status::Cancelled);
    assert_eq!(node.backup_dir_names(), Vec::<String>::new());
}

#[test]
fn deleting_a_running_backup_cancels_it_and_leaves_nothing() {
    let node = Node::new();
    big_tree(&node, 20);
    // DELETE waits for the create to stop, so it runs on its own thread; the
    // callback holds the create until the delete is under way.
    let (result, deleted) = std::thread::scope(|s| {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (calling_tx, calling_rx) = std::sync::mpsc::channel::<()>();
        let node = &node;
        let deleter = s.spawn(move || {
            go_rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap();
            calling_tx.send(()).unwrap();
            node.engine.delete_backup(SERVER, BACKUP)
        });
        let mut fired = false;
        let mut cb = |p: &Progress| {
            if p.phase == Phase::Archive && !fired {
                fired = true;
                let _ = go_tx.send(());
                calling_rx
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .unwrap();
                // The delete triggers the cancellation right after it starts.
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            true
        };
        let mut ctl = Control::new(None, Some(&mut cb));
        let result = create_with(node, BACKUP, &mut ctl);
        drop(ctl);
        (result, deleter.join().unwrap())
    });
    deleted.unwrap();
    assert_eq!(result.unwrap_err().status, Status::Cancelled);
    assert_eq!(node.backup_dir_names(), Vec::<String>::new());
}

#[test]
fn deleting_a_backup_from_its_own_progress_callback_cancels_it_at_once() {
    let node = Node::new();
    big_tree(&node, 20);
    let mut deleted = None;
    let mut cb = |p: &Progress| {
        if p.phase == Phase::Archive && deleted.is_none() {
            // The backup cannot stop while its callback runs: the delete
            // must not wait for it (it would for 60 s, then WB_INTERNAL).
            let began = std::time::Instant::now();
            let result = node.engine.delete_backup(SERVER, BACKUP);
            deleted = Some((result, began.elapsed()));
        }
        true
    };
    let mut ctl = Control::new(None, Some(&mut cb));
    let result = create_with(&node, BACKUP, &mut ctl);
    drop(ctl);
    let (deleted, took) = deleted.expect("the callback ran in the archive phase");
    deleted.unwrap();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(result.unwrap_err().status, Status::Cancelled);
    assert_eq!(node.backup_dir_names(), Vec::<String>::new());
    // Gone: a second delete finds nothing, and the engine knows no such backup.
    assert_eq!(
        node.engine
            .delete_backup(SERVER, BACKUP)
            .unwrap_err()
            .status,
        Status::NotFound
    );
}

#[test]
fn a_cancelled_restore_keeps_every_file() {
    let node = Node::new();
    big_tree(&node, 20);
    node.create(BACKUP, "").unwrap();
    write_file(
        &node.root().join("d0/f0"),
        b"modified",
        0o644,
        1_700_000_000,
    );
    let before = snapshot(&node.root());
    let token = CancelToken::new();
    let body = local_restore(true);
    let (result, _) = while_in_phase(
        Phase::Extract,
        |ctl| {
            node.engine
                .restore_backup(SERVER, BACKUP, &body, ctl)
                .map(|_| String::new())
        },
        Some(&token),
        || token.trigger(),
    );
    assert_eq!(result.unwrap_err().status, Status::Cancelled);
    assert_eq!(snapshot(&node.root()), before);
}

#[test]
fn a_busy_server_is_a_conflict() {
    let node = Node::new();
    big_tree(&node, 5);
    let other = "22222222-2222-4333-8444-555555555555";
    std::fs::write(node.archive(other), b"x").unwrap();
    let (result, errors) = while_in_phase(
        Phase::Archive,
        |ctl| create_with(&node, BACKUP, ctl),
        None,
        || {
            let third = "33333333-2222-4333-8444-555555555555";
            let body = local_restore(true);
            vec![
                create_with(&node, third, &mut Control::none())
                    .unwrap_err()
                    .status,
                create_with(&node, BACKUP, &mut Control::none())
                    .unwrap_err()
                    .status,
                node.engine
                    .check_restore(SERVER, other, &body)
                    .unwrap_err()
                    .status,
                node.restore(other, true).unwrap_err().status,
            ]
        },
    );
    result.unwrap();
    assert_eq!(errors.unwrap(), vec![Status::Conflict; 4]);
}

/// Builds a stage as an interrupted truncating restore leaves it.
fn fake_interrupted_stage(root: &std::path::Path, committed: bool) {
    let stage = root.join(".wings-backup-restore-crashed");
    std::fs::create_dir_all(stage.join("tree/newdir")).unwrap();
    std::fs::create_dir_all(stage.join("old")).unwrap();
    std::fs::write(stage.join("tree/new.txt"), b"new").unwrap();
    std::fs::write(stage.join("tree/newdir/n.txt"), b"n").unwrap();
    std::fs::write(stage.join("lock"), b"").unwrap();
    // As the engine makes its stages (others are not its own).
    std::fs::set_permissions(&stage, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    if committed {
        std::fs::write(stage.join("commit"), b"truncate\n").unwrap();
        // Half of phase one done: one old entry already moved aside.
        std::fs::rename(root.join("old1.txt"), stage.join("old/old1.txt")).unwrap();
    }
}

#[test]
fn an_interrupted_committed_restore_is_finished_at_start() {
    let node = Node::new();
    write_file(&node.root().join("old1.txt"), b"1", 0o644, 1);
    write_file(&node.root().join("old2.txt"), b"2", 0o644, 1);
    fake_interrupted_stage(&node.root(), true);
    let _engine = node.restart();
    let names: Vec<_> = snapshot(&node.root())
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["new.txt", "newdir", "newdir/n.txt"]);
}

#[test]
fn an_interrupted_uncommitted_restore_is_undone_at_start() {
    let node = Node::new();
    write_file(&node.root().join("old1.txt"), b"1", 0o644, 1);
    write_file(&node.root().join("old2.txt"), b"2", 0o644, 1);
    fake_interrupted_stage(&node.root(), false);
    let _engine = node.restart();
    let names: Vec<_> = snapshot(&node.root())
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["old1.txt", "old2.txt"]);
}

#[test]
fn stale_temporary_archives_are_removed_at_start() {
    let node = Node::new();
    std::fs::write(
        node.backups()
            .join(format!(".{BACKUP}.tar.gz.part-123-abc-0")),
        b"partial",
    )
    .unwrap();
    std::fs::write(node.backups().join("unrelated.txt"), b"keep").unwrap();
    let _engine = node.restart();
    assert_eq!(node.backup_dir_names(), vec!["unrelated.txt"]);
}
