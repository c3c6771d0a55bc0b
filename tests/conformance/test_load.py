"""Concurrency and load (issue #7), over loopback against each host.

LOAD_CLIENTS threads mix creates, restores, deletes and duplicate-uuid
creates on LOAD_SERVERS servers with small trees for LOAD_SECONDS, then:

- no deadlock: every request is answered within REQUEST_TIMEOUT;
- statuses are exactly those of docs/api.md (sections 2-5): a create is 202 or 409 (409 only
  while another operation could hold the server), a duplicate backup uuid is
  always 409, a restore 204 or 409 (same), a delete of a finished backup 204;
- every backup accepted is reported to the Panel exactly once, successfully;
  every archive left at the end is a valid gzip'd tar holding the server's
  tree (never a restore's staging directory, which a backup interleaved with
  a restore would catch), with the sha1 and size the Panel was told; no
  temporary file is left; every server's tree is what it was;
- the host's RSS after warm-up stays within a bound of its warm-up peak.

And a backup and a restore of one server sent at once: one of them is 409,
and what the other did is whole (never a mixture).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
import requests

from conftest import Host, PanelStub, started
from helpers import WAIT, create_body, new_id, restore_body, snapshot, temporary_files, wait_until

LOAD_SERVERS = 20
LOAD_CLIENTS = 50
LOAD_SECONDS = 20.0
REQUEST_TIMEOUT = 60.0
# RSS after warm-up may exceed the warm-up peak by this much (allocator
# slack, thread stacks touched late), never grow without bound.
RSS_SLACK_KIB = 48 * 1024
RSS_SLACK_RATIO = 1.25
STAGING_PREFIX = ".wings-backup-restore"


@pytest.fixture(scope="module", params=["go", "python"])
def load_host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              panel: PanelStub) -> Iterator[Host]:
    yield from started(request.param, tmp_path_factory.mktemp(f"{request.param}-load-host"), panel)


def small_tree(seed: int) -> "callable":
    def write(root: Path) -> None:
        rnd = random.Random(seed)
        (root / "world" / "region").mkdir(parents=True)
        (root / "logs").mkdir()
        (root / "server.properties").write_text(f"motd=server {seed}\nmax-players={seed + 1}\n")
        (root / "world" / "level.dat").write_bytes(rnd.randbytes(20_000))
        (root / "world" / "region" / "r.0.0.mca").write_bytes(b"chunk%d" % seed * 3000)
        os.symlink("world/level.dat", root / "level.link")
    return write


# --------------------------------------------------------------------------- the model of what ran


@dataclass
class Call:
    op: str  # create, dup, restore, delete
    server: str
    backup: str
    t0: float
    t1: float
    status: int  # 0: no answer (an exception)
    error: str = ""


@dataclass
class Load:
    host: Host
    panel: PanelStub
    servers: List[str]
    deadline: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: List[Call] = field(default_factory=list)
    # Backups accepted (202), by uuid: their server.
    accepted: Dict[str, str] = field(default_factory=dict)
    # Finished backups (Panel report in) not claimed by a client: by server.
    free: Dict[str, List[str]] = field(default_factory=dict)
    reported: Set[str] = field(default_factory=set)
    deleted: Set[str] = field(default_factory=set)

    def claim(self, server: Optional[str], rnd: random.Random) -> Optional[Tuple[str, str]]:
        """A finished backup for this client alone (of server, or any)."""
        with self.lock:
            pools = [server] if server else [s for s in self.servers if self.free.get(s)]
            pools = [s for s in pools if self.free.get(s)]
            if not pools:
                return None
            s = rnd.choice(pools)
            b = self.free[s].pop(rnd.randrange(len(self.free[s])))
            return s, b

    def give_back(self, server: str, backup: str) -> None:
        with self.lock:
            self.free.setdefault(server, []).append(backup)

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)


def send(load: Load, session: requests.Session, op: str, server: str, backup: str, method: str, path: str,
         body: Optional[dict]) -> Call:
    t0 = time.monotonic()
    try:
        res = load.host.request(method, path, body=body, session=session, timeout=REQUEST_TIMEOUT)
        call = Call(op, server, backup, t0, time.monotonic(), res.status_code,
                    "" if res.status_code < 400 else res.text[:200])
    except Exception as e:  # a timeout is a deadlock; anything else a failure too
        call = Call(op, server, backup, t0, time.monotonic(), 0, repr(e)[:300])
    load.record(call)
    return call


def client(load: Load, seed: int) -> None:
    rnd = random.Random(seed)
    session = requests.Session()
    try:
        while time.monotonic() < load.deadline:
            server = rnd.choice(load.servers)
            roll = rnd.random()
            if roll < 0.45:
                backup = new_id()
                call = send(load, session, "create", server, backup, "POST", f"/api/servers/{server}/backup",
                            create_body(backup))
                if call.status == 202:
                    with load.lock:
                        load.accepted[backup] = server
                continue
            claimed = load.claim(None if roll >= 0.85 else server, rnd)
            if claimed is None:
                time.sleep(0.01)
                continue
            owner, backup = claimed
            if roll < 0.70:
                send(load, session, "restore", owner, backup, "POST",
                     f"/api/servers/{owner}/backup/{backup}/restore", restore_body(rnd.random() < 0.5))
                load.give_back(owner, backup)
            elif roll < 0.85:
                call = send(load, session, "delete", owner, backup, "DELETE",
                            f"/api/servers/{owner}/backup/{backup}", None)
                if call.status == 204:
                    with load.lock:
                        load.deleted.add(backup)
                else:
                    load.give_back(owner, backup)
            else:
                # The uuid of a finished backup, on any server: always 409.
                target = rnd.choice(load.servers)
                send(load, session, "dup", target, backup, "POST", f"/api/servers/{target}/backup",
                     create_body(backup))
                load.give_back(owner, backup)
    finally:
        session.close()


def reports_by_backup(panel: PanelStub) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {}
    for r in panel.state()["reports"]:
        out.setdefault(r["backup"], []).append(r)
    return out


def promoter(load: Load, stop: threading.Event) -> None:
    """Hands finished backups (their Panel report in) to the clients."""
    while not stop.wait(0.3):
        reports = reports_by_backup(load.panel)
        with load.lock:
            for backup, server in load.accepted.items():
                if backup not in load.reported and backup in reports:
                    load.reported.add(backup)
                    load.free.setdefault(server, []).append(backup)


def sample_rss(host: Host, samples: List[Tuple[float, int]], stop: threading.Event) -> None:
    while not stop.wait(0.25):
        try:
            samples.append((time.monotonic(), host.rss_kib()))
        except (OSError, AssertionError):
            return


def test_load_mixed_operations(load_host: Host, panel: PanelStub) -> None:
    host = load_host
    servers = [host.server(small_tree(i)) for i in range(LOAD_SERVERS)]
    expected = {s: snapshot(host.root(s)) for s in servers}
    load = Load(host, panel, servers, time.monotonic() + LOAD_SECONDS)
    # Warm up the code paths once before RSS is measured.
    with requests.Session() as session:
        for s in servers[:4]:
            b = new_id()
            assert send(load, session, "create", s, b, "POST", f"/api/servers/{s}/backup",
                        create_body(b)).status == 202
            load.accepted[b] = s
    began = time.monotonic()
    load.deadline = began + LOAD_SECONDS
    stop = threading.Event()
    rss: List[Tuple[float, int]] = []
    helpers = [threading.Thread(target=promoter, args=(load, stop), daemon=True),
               threading.Thread(target=sample_rss, args=(host, rss, stop), daemon=True)]
    clients = [threading.Thread(target=client, args=(load, 1000 + i), daemon=True) for i in range(LOAD_CLIENTS)]
    for t in helpers + clients:
        t.start()
    for t in clients:
        t.join(LOAD_SECONDS + REQUEST_TIMEOUT + 10)
    hung = sum(t.is_alive() for t in clients)
    stop.set()
    for t in helpers:
        t.join(5)
    assert hung == 0, f"{hung} client threads still waiting: a request was never answered\n{host.log()}"

    # -- every request answered, with the status docs/api.md gives ---------------------
    calls = load.calls
    counts = Counter((c.op, c.status) for c in calls)
    unanswered = [c for c in calls if c.status == 0]
    assert not unanswered, f"{len(unanswered)} requests unanswered, e.g. {unanswered[:3]}"
    allowed = {"create": {202, 409}, "dup": {409}, "restore": {204, 409}, "delete": {204}}
    wrong = [c for c in calls if c.status not in allowed[c.op]]
    assert not wrong, f"unexpected statuses {Counter((c.op, c.status) for c in wrong)}, e.g. {wrong[:3]}"
    for key, least in {("create", 202): 40, ("restore", 204): 20, ("delete", 204): 5, ("dup", 409): 5}.items():
        assert counts[key] >= least, f"too little load got through: {dict(counts)}"

    # -- every accepted backup ends, reported once and successfully ----------------
    def all_reported() -> bool:
        got = reports_by_backup(panel)
        return all(b in got for b in load.accepted)
    wait_until(all_reported, "some accepted backups were never reported to the Panel", timeout=2 * WAIT)
    time.sleep(0.5)
    reports = reports_by_backup(panel)
    for backup in load.accepted:
        rs = reports[backup]
        assert len(rs) == 1, f"backup {backup}: {len(rs)} reports"
        assert rs[0]["body"]["successful"] is True, rs[0]

    # -- a 409 only while another operation could hold the server -------------------
    holds: Dict[str, List[Tuple[float, float]]] = {}
    for c in calls:
        if c.op == "restore" and c.status == 204:
            holds.setdefault(c.server, []).append((c.t0, c.t1))
        elif c.op == "create" and c.status == 202:
            holds.setdefault(c.server, []).append((c.t0, reports[c.backup][0]["t"]))
    unexplained = [c for c in calls if c.op in ("create", "restore") and c.status == 409
                   and not any(a <= c.t1 and c.t0 <= b for a, b in holds.get(c.server, []))]
    assert not unexplained, f"{len(unexplained)} 409s with nothing holding the server, e.g. {unexplained[:3]}"

    # -- what is left on disk ------------------------------------------------------
    wait_until(lambda: temporary_files(host) == [], f"temporary files left: {temporary_files(host)}")
    for backup, server in load.accepted.items():
        path = host.archive(backup)
        if backup in load.deleted:
            assert not path.exists(), f"deleted backup {backup} is still there"
            continue
        data = path.read_bytes()
        body = reports[backup][0]["body"]
        assert hashlib.sha1(data).hexdigest() == body["checksum"] and len(data) == body["size"], backup
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                if m.isfile():
                    tar.extractfile(m).read()  # every byte readable, CRC checked at the end
        names = {m.name for m in members}
        assert not any(n.startswith(STAGING_PREFIX) for n in names), f"{backup} caught a restore midway: {names}"
        assert names == set(expected[server]), f"{backup}: {sorted(names ^ set(expected[server]))}"
    for s in servers:
        assert snapshot(host.root(s)) == expected[s], f"server {s} changed"

    # -- memory stays flat after warm-up -----------------------------------------------
    warm = [kib for t, kib in rss if t < began + LOAD_SECONDS * 0.4]
    late = [kib for t, kib in rss if t >= began + LOAD_SECONDS * 0.6]
    assert warm and late, "RSS was not sampled"
    bound = max(max(warm) * RSS_SLACK_RATIO, max(warm) + RSS_SLACK_KIB)
    print(f"\n{host.kind} host: {len(calls)} requests {dict(counts)}; RSS KiB warm-up max {max(warm)}, "
          f"after max {max(late)}, end {rss[-1][1]}")
    assert max(late) <= bound, f"RSS grew from {max(warm)} KiB to {max(late)} KiB (bound {bound:.0f})"


# --------------------------------------------------------------------------- backup and restore at once


def state_tree(tag: bytes) -> "callable":
    def write(root: Path) -> None:
        (root / "world").mkdir()
        (root / "world" / "big.bin").write_bytes(hashlib.sha256(tag).digest() * (48 * 1024))  # 1.5 MiB
        (root / "world" / "noise.bin").write_bytes(os.urandom(1 << 20))
        (root / f"only-in-{tag.decode()}.txt").write_text(tag.decode())
    return write


def archive_of(tree: "callable", where: Path) -> Tuple[bytes, Dict[str, str]]:
    where.mkdir()
    tree(where)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name in sorted(os.listdir(where)):
            tar.add(where / name, arcname=name)
    return buf.getvalue(), snapshot(where)


@pytest.mark.parametrize("first", ["backup", "restore"])
def test_a_backup_and_a_restore_at_once_never_interleave(load_host: Host, panel: PanelStub, tmp_path: Path,
                                                         first: str) -> None:
    host = load_host
    server = host.server(state_tree(b"A"))
    state_a = snapshot(host.root(server))
    data_b, state_b = archive_of(state_tree(b"B"), tmp_path / "b")
    restore_id = new_id()
    host.archive(restore_id).write_bytes(data_b)
    backup = new_id()

    barrier = threading.Barrier(2)
    results: Dict[str, requests.Response] = {}

    def run(what: str) -> None:
        barrier.wait(5)
        if what != first:
            time.sleep(0.005)
        if what == "backup":
            results[what] = host.request("POST", f"/api/servers/{server}/backup", body=create_body(backup))
        else:
            results[what] = host.request("POST", f"/api/servers/{server}/backup/{restore_id}/restore",
                                         body=restore_body(True))

    threads = [threading.Thread(target=run, args=(w,)) for w in ("backup", "restore")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT)
    assert set(results) == {"backup", "restore"}, "a request was never answered"
    statuses = {w: r.status_code for w, r in results.items()}
    assert statuses in ({"backup": 202, "restore": 409}, {"backup": 409, "restore": 204}), statuses

    if statuses["backup"] == 202:
        # The backup holds state A whole; the restore changed nothing.
        path = host.archive(backup)
        wait_until(lambda: path.exists() and bool(panel.backup_reports(backup, 0)), "the backup did not finish")
        with tarfile.open(path, "r:gz") as tar:
            got = {m.name: hashlib.sha1(tar.extractfile(m).read()).hexdigest()
                   for m in tar.getmembers() if m.isfile()}
        want = {k: v.split()[-1] for k, v in state_a.items() if v.startswith("file ")}
        assert got == want, "the backup is not state A"
        assert snapshot(host.root(server)) == state_a
    else:
        # The restore brought state B whole; the backup never started.
        assert snapshot(host.root(server)) == state_b
        time.sleep(0.5)
        assert not host.archive(backup).exists()
        assert not panel.backup_reports(backup, 0), "a refused backup was reported"
