"""``chatmdb serve --backup-dir DIR --backup-every D --backup-keep N``: hot backups on a schedule while serving.

Against a real server: backups are taken, verified, pruned to the newest N and
reported at /metrics; a directory that cannot be written makes every backup
fail, counted, while the server goes on answering. In process: names, pruning
of its own folders only, leftovers of an interrupted backup, a restart that
adopts the newest backup, the option checks, and worker 0 alone on a schedule.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatmdb import Store, open_store
from chatmdb.cli import main
from chatmdb.errors import ValidationError
from chatmdb.gateway import create_app
from chatmdb.gateway.backups import NAME, BackupPolicy, BackupSchedule, own_backups, parse_duration, taken_at
from chatmdb.metrics import Metrics

from .conftest import BACKENDS, Server, start_server, stop_and_check

WAIT = 60.0  # seconds any schedule gets to show its effect


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled series in a Prometheus text exposition (None if absent)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def scrape(server: Server) -> str:
    with server.http() as http:
        response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


def wait_for_metric(server: Server, name: str, at_least: float) -> str:
    """Scrape until *name* reaches *at_least* (bounded); return the last scrape."""
    deadline = time.monotonic() + WAIT
    while True:
        text = scrape(server)
        value = metric(text, name)
        if value is not None and value >= at_least:
            return text
        assert time.monotonic() < deadline, f"{name} stayed at {value} for {WAIT} s:\n{server.log_text()}"
        time.sleep(0.1)


def write_messages(server: Server, count: int) -> tuple[str, list[str]]:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": "backed up"})
        assert response.status_code == 201, response.text
        sid = response.json()["id"]
        uuids = []
        for i in range(count):
            response = http.post(
                f"/api/sessions/{sid}/messages", json={"content": f"message {i}", "message_uuid": f"b-{i}"}
            )
            assert response.status_code == 201, response.text
            uuids.append(response.json()["message_uuid"])
    return sid, uuids


@pytest.mark.parametrize("backend", BACKENDS)
def test_backups_are_taken_verified_pruned_and_reported(tmp_path: Path, backend: str) -> None:
    backups = tmp_path / "backups"
    began = time.time()
    server = start_server(
        tmp_path, backend, args=("--backup-dir", str(backups), "--backup-every", "1s", "--backup-keep", "2")
    )
    try:
        sid, uuids = write_messages(server, 20)
        # Every backup that starts from here on holds the messages; the newest
        # two were both begun after this scrape once two more have finished.
        so_far = metric(scrape(server), "chatmdb_backups_total") or 0.0
        text = wait_for_metric(server, "chatmdb_backups_total", max(3.0, so_far + 3))
        stamp = metric(text, "chatmdb_last_backup_timestamp_seconds")
        size = metric(text, "chatmdb_last_backup_bytes")
        assert stamp is not None and began - 1 <= stamp <= time.time()
        assert size is not None and size > 0
        assert metric(text, "chatmdb_backup_failures_total") == 0
        assert (metric(text, "chatmdb_last_backup_duration_seconds") or 0) > 0
        # Serving goes on between backups.
        with server.http() as http:
            assert http.get(f"/api/sessions/{sid}/messages").status_code == 200
    finally:
        stop_and_check(server)
    kept = own_backups(backups)
    assert len(kept) == 2, sorted(p.name for p in backups.iterdir())
    assert sorted(p.name for p in backups.iterdir()) == sorted(p.name for p in kept), "a partial backup was left behind"
    assert all(NAME.fullmatch(p.name) for p in kept)
    assert kept[0].name < kept[1].name and began - 1 <= taken_at(kept[0]) <= taken_at(kept[1]) <= time.time()
    assert oct(backups.stat().st_mode & 0o777) == oct(0o700)
    for folder in kept:
        with open_store(folder, backend=backend) as copy:
            assert copy.verify()["ok"]
            assert copy.get_session(sid) is not None
            page = copy.get_session_messages(sid, limit=100, direction="asc")
            items = page["items"] if isinstance(page, dict) else page
            assert [m["message_uuid"] for m in items] == uuids


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backup_directory_that_cannot_be_written_is_counted_and_serving_goes_on(tmp_path: Path, backend: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = start_server(
        tmp_path, backend, args=("--backup-dir", str(blocker / "backups"), "--backup-every", "1s", "--backup-keep", "2")
    )
    try:
        text = wait_for_metric(server, "chatmdb_backup_failures_total", 2)
        assert metric(text, "chatmdb_backups_total") == 0
        assert metric(text, "chatmdb_last_backup_timestamp_seconds") == 0
        with server.http() as http:
            assert http.get("/healthz").status_code == 200
        sid, _ = write_messages(server, 5)  # writes are answered while backups fail
        with server.http() as http:
            response = http.get(f"/api/sessions/{sid}/messages")
        assert response.status_code == 200
        text = wait_for_metric(server, "chatmdb_backup_failures_total", 3)
    finally:
        stop_and_check(server)
    assert blocker.read_text() == "not a directory"
    assert "scheduled backup into" in server.log_text() and "failed" in server.log_text()


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("10m") == 600
    assert parse_duration("1h") == 3600
    assert parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 2H ") == 7200
    for bad in ("", "1", "0s", "-1s", "1x", "1.5h", "h", "1 h", "1s1", "s1"):
        with pytest.raises(ValidationError):
            parse_duration(bad)


def test_serve_refuses_bad_backup_options(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    runner = CliRunner()
    for args, words in (
        (["--backup-dir", str(tmp_path / "b"), "--backup-every", "5x"], ["--backup-every", "not a duration"]),
        (["--backup-dir", str(tmp_path / "b"), "--backup-every", "0s"], ["--backup-every"]),
        (["--backup-dir", str(tmp_path / "b"), "--backup-keep", "0"], ["--backup-keep"]),
        (["--backup-every", "1h"], ["need --backup-dir"]),
        (["--backup-keep", "3"], ["need --backup-dir"]),
        (["--backup-dir", db], ["inside the database directory"]),
        (["--backup-dir", str(Path(db) / "backups")], ["inside the database directory"]),
        (["--backup-dir", ""], ["--backup-dir"]),
    ):
        result = runner.invoke(main, ["serve", "--db", db, "--port", "0", *args])
        assert result.exit_code == 2, (args, result.output)
        for word in words:
            assert word in result.output, (args, result.output)
    assert not (tmp_path / "db").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValidationError):
        BackupPolicy(tmp_path, every=0)
    with pytest.raises(ValidationError):
        BackupPolicy(tmp_path, keep=0)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = open_store(tmp_path / "db", backend=str(request.param))
    store.create_session(session_id="s")
    store.create_message({"session_id": "s", "message_uuid": "m", "content": "kept in every backup"})
    yield store
    store.close()


def test_pruning_touches_only_its_own_folders(tmp_path: Path, store: Store) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    foreign = ["chatmdb-data", "chatmdb-2020", "notes", "chatmdb-20200101T000000Z.tar"]
    for name in foreign:
        (directory / name).mkdir()
    (directory / "chatmdb-20190101T000000Z").write_text("a file with a backup's name")  # not a folder: not ours
    (directory / "chatmdb-20190102T000000Z").symlink_to(directory / "notes")  # a symlink: not followed, not ours
    metrics = Metrics(store, connected_clients=lambda: 0)
    schedule = BackupSchedule(store, BackupPolicy(directory, every=3600, keep=2), metrics)
    taken = [schedule.take() for _ in range(4)]  # within a second or two: names get -1, -2...
    assert all(t is not None for t in taken)
    names = [Path(t["path"]).name for t in taken if t is not None]
    assert len(set(names)) == 4 and all(NAME.fullmatch(n) for n in names)
    kept = own_backups(directory)
    assert [p.name for p in kept] == names[-2:]
    for name in foreign:
        assert (directory / name).is_dir()
    assert (directory / "chatmdb-20190101T000000Z").read_text() == "a file with a backup's name"
    assert (directory / "chatmdb-20190102T000000Z").is_symlink()
    for folder in kept:
        assert sorted(p.name for p in folder.iterdir()) == sorted(store.engine.FILES), (
            "a backup holds the database alone"
        )
    text = metrics.render().decode()
    assert metric(text, "chatmdb_backups_total") == 4
    assert metric(text, "chatmdb_last_backup_bytes") == taken[-1]["bytes"]  # type: ignore[index]
    metrics.close()


def test_a_restarted_schedule_clears_leftovers_and_adopts_the_newest_backup(tmp_path: Path, store: Store) -> None:
    directory = tmp_path / "backups"
    metrics = Metrics(store, connected_clients=lambda: 0)
    first = BackupSchedule(store, BackupPolicy(directory, every=3600, keep=5), metrics)
    made = first.take()
    assert made is not None
    # An interrupted backup of a process that is gone, and one of a live process.
    dead = directory / ".chatmdb-20200101T000000Z.partial-999999999"
    live = directory / f".chatmdb-20200101T000000Z.partial-{os.getppid()}"
    dead.mkdir()
    live.mkdir()
    metrics.close()
    metrics = Metrics(store, connected_clients=lambda: 0)
    second = BackupSchedule(store, BackupPolicy(directory, every=3600, keep=5), metrics)
    delay = second._resume()
    assert 3500 < delay <= 3600, "a backup taken just now is not due again for a period"
    assert not dead.exists() and live.exists()
    text = metrics.render().decode()
    assert metric(text, "chatmdb_last_backup_timestamp_seconds") == taken_at(Path(made["path"]))
    assert metric(text, "chatmdb_last_backup_bytes") == made["bytes"]
    assert metric(text, "chatmdb_backups_total") == 0
    metrics.close()
    # A period that has passed since the newest backup: one is due at once.
    Path(made["path"]).rename(directory / "chatmdb-20200101T000000Z")
    metrics = Metrics(store, connected_clients=lambda: 0)
    assert BackupSchedule(store, BackupPolicy(directory, every=1, keep=5), metrics)._resume() == 0
    metrics.close()


async def test_worker_0_alone_runs_the_schedule(tmp_path: Path, store: Store) -> None:
    directory = tmp_path / "backups"
    policy = BackupPolicy(directory, every=0.2, keep=3)
    apps = [create_app(store, workers=2, worker_index=i, backups=policy) for i in range(2)]
    assert apps[0].gateway.backups is not None and apps[1].gateway.backups is None
    async with apps[0].gateway.lifespan(apps[0]), apps[1].gateway.lifespan(apps[1]):
        deadline = time.monotonic() + WAIT
        while len(own_backups(directory)) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    # Stopped: no backup in progress, none started later.
    names = sorted(p.name for p in directory.iterdir())
    await asyncio.sleep(0.5)
    assert sorted(p.name for p in directory.iterdir()) == names
    assert len(names) == 3
    assert metric(apps[0].gateway.metrics.render().decode(), "chatmdb_backups_total") >= 3  # type: ignore[operator]
    assert "chatmdb_backup" not in apps[1].gateway.metrics.render().decode()
    assert not store.closed


def test_backups_inside_the_database_are_refused(store: Store) -> None:
    metrics = Metrics(store, connected_clients=lambda: 0)
    with pytest.raises(ValidationError, match="inside the database directory"):
        BackupSchedule(store, BackupPolicy(store.path / "backups"), metrics)
    metrics.close()
