"""A full disk fails writes with a clear StorageError, loses nothing, and heals when space returns.

The test mounts a tmpfs of 8 MiB of its own and fills what the database
leaves free with a ballast file. Where mounting is not permitted (not root,
no CAP_SYS_ADMIN) it falls back to RLIMIT_FSIZE in the writing process, so
writes past a file-size cap fail with EFBIG; the fault that ran is recorded
as the test's ``disk_fault`` property. The writes run in a child process, so
a crash on ENOSPC would show as a failed exit rather than take pytest down.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _rel import check_messages, run_child

from chatmdb import open_store


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield mount, "fsize"
        return
    try:
        yield mount, "tmpfs"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full(small_fs: tuple[Path, str], backend: str, record_property: pytest.RecordProperty) -> None:
    mount, fault = small_fs
    record_property("disk_fault", fault)
    path = mount / "db"
    report = run_child("disk-full", path=str(path), backend=backend, fault=fault, ballast=str(mount / "ballast"))
    # Writes failed, with the engine's error translated to a StorageError that says why.
    assert report["error_is_storage_error"], report["error_type"]
    if fault == "tmpfs":
        assert "disk is full" in report["error"], report["error"]
    assert report["while_full"] in ("StorageError", "written")
    # Reads kept serving everything committed, while the disk was full.
    acked = report["acked_before"]
    assert set(acked) <= set(report["readable_while_full"])
    assert report["verify_while_full"]
    # Once space returned, writes succeeded again and the store checked clean.
    assert len(report["acked_after"]) == 50
    assert report["verify_after"]
    with open_store(path, backend=backend) as store:
        check_messages(store, ["disk"], acked + report["acked_after"])
    print(f"{backend} on {fault}: {len(acked)} messages before the disk filled, error: {report['error']}")


def test_import_onto_a_full_disk_fails_cleanly_and_changes_nothing(
    small_fs: tuple[Path, str], backend: str, tmp_path: Path
) -> None:
    import sys

    mount, fault = small_fs
    if fault != "tmpfs":
        pytest.skip("needs a small filesystem of its own (mount)")
    source = tmp_path / "source"
    with open_store(source, backend=backend) as store:
        store.create_session(session_id="big")
        for i in range(400):  # ~16 MB of messages: more than the 8 MiB filesystem holds
            store.create_message({"session_id": "big", "content": f"{i} " + "x" * 40_000})
    export = tmp_path / "export.jsonl"
    done = subprocess.run([sys.executable, "-m", "chatmdb", "export", "--db", str(source), "--backend", backend,
                           "-o", str(export)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    target = mount / "db"
    done = subprocess.run([sys.executable, "-m", "chatmdb", "import", "--db", str(target), "--backend", backend,
                           str(export)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and ("full" in done.stderr or "space" in done.stderr), done.stderr
    # Nothing at the target, and the half-built database beside it is gone (the disk is usable again).
    assert not target.exists() or not [p for p in target.iterdir() if p.name != "chatmdb.lock"]
    assert [p.name for p in mount.iterdir() if p.name != "db"] == []
