"""A full disk fails writes with a clear StorageError, loses nothing, and heals when space returns.

Each fault is a test of its own, named in its id: ``tmpfs`` mounts a tmpfs of
8 MiB and fills what the database leaves free with a ballast file (a real
ENOSPC); ``fsize`` caps file size with RLIMIT_FSIZE in the writing process, so
writes past the cap fail with EFBIG. Where mounting is not permitted (not
root, no CAP_SYS_ADMIN) the tmpfs tests are skipped, with the mount's error as
the reason, except under CI (``CI`` set), which runs as root and so must run
them: there a failed mount fails. The writes run in a child process, so a
crash on ENOSPC would show as a failed exit rather than take pytest down.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _rel import check_messages, run_child

from chatmdb import open_store


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB of its own, unmounted at teardown."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI runs as root and must fill a real filesystem")
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("fault", ["tmpfs", "fsize"])
def test_disk_full(
    fault: str,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    if fault == "tmpfs":
        mount: Path = request.getfixturevalue("small_fs")
    else:
        mount = tmp_path / "capped"
        mount.mkdir()
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
    small_fs: Path, backend: str, tmp_path: Path
) -> None:
    import sys

    mount = small_fs
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
