"""Work the reliability tests run in separate processes: ``python _child.py COMMAND JSON``.

Each command reads its arguments from one JSON object. Processes that get
killed report progress through files or pipes written unbuffered, one line per
event, so whatever the parent reads after a SIGKILL was really reported.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chatmdb import ChatMDBError, StorageError, open_store


def writer(args: dict[str, Any]) -> None:
    """Write messages from several threads until killed; append each acked uuid to a file.

    A message is acknowledged when ``create_message`` returned; only then is
    its uuid written (one ``os.write`` of one line, which a SIGKILL cannot split).
    Every tenth message is sent twice, as a client retry would be.
    """
    options = {"map_size": args["map_size"]} if args.get("map_size") else {}
    store = open_store(args["path"], backend=args["backend"], durability=args["durability"], **options)
    fd = os.open(args["ackfile"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sids: list[str] = args["sids"]

    def produce(worker: int) -> None:
        rng = random.Random(worker)
        i = 0
        while True:
            uuid = f"{args['prefix']}-w{worker}-{i}"
            data = {"session_id": sids[i % len(sids)], "message_uuid": uuid, "content": "x" * rng.randint(10, 3000)}
            msg = store.create_message(data)
            if i % 10 == 0:
                again = store.create_message(data)
                if again != msg:
                    os.write(fd, f"!retry returned a different message for {uuid}\n".encode())
            os.write(fd, f"{msg['message_uuid']} {msg['session_id']} {msg['seq']}\n".encode())
            i += 1

    threads = [threading.Thread(target=produce, args=(w,), daemon=True) for w in range(args["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def mp_writer(args: dict[str, Any]) -> None:
    """Write ``count`` messages from two threads while a third pages through sessions.

    Prints one JSON object: the acked uuids, how many full walks were made and
    any inconsistency a walk saw (a gap or a repeat between pages).
    """
    store = open_store(args["path"], backend=args["backend"])
    sids: list[str] = args["sids"]
    acked: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def produce(thread: int) -> None:
        for i in range(args["count"] // 2):
            uuid = f"p{args['worker']}-t{thread}-{i}"
            msg = store.create_message({"session_id": sids[i % len(sids)], "message_uuid": uuid, "n": i})
            with lock:
                acked.append(msg["message_uuid"])

    def page() -> int:
        walks = 0
        while not done.is_set() or walks == 0:
            for sid in sids:
                # Newest first, 37 at a time, down to seq 1: every seq exactly once.
                seqs: list[int] = []
                cursor = None
                while True:
                    result = store.get_session_messages(sid, limit=37, cursor=cursor, include_total=True)
                    assert isinstance(result, dict)
                    seqs += [m["seq"] for m in result["items"]]
                    cursor = result["pagination"].get("next_cursor")
                    if cursor is None:
                        break
                if seqs != list(range(len(seqs), 0, -1)):
                    problems.append(f"walk of {sid} saw {seqs[:5]}... ({len(seqs)} items)")
                for uuid in acked[-5:]:
                    if store.get_message(uuid) is None:
                        problems.append(f"acked {uuid} not readable")
            walks += 1
        return walks

    walks: list[int] = []
    pager = threading.Thread(target=lambda: walks.append(page()))
    pager.start()
    producers = [threading.Thread(target=produce, args=(t,)) for t in range(2)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    pager.join()
    store.close()
    print(json.dumps({"acked": acked, "walks": walks[0] if walks else 0, "problems": problems}))


def reader_zygote(args: dict[str, Any]) -> None:
    """Fork waves of readers that hold a read transaction, then SIGKILL them.

    Protocol on stdin/stdout, one line each: the parent sends ``wave``; this
    process forks ``per_wave`` children, each opens the store, begins a read
    transaction, reads and reports; then it prints ``held PID...``. The
    parent inspects and sends ``kill``; every child is SIGKILLed and reaped,
    and this process prints ``killed``. ``stop`` ends it.
    """
    for line in sys.stdin:
        if line.strip() == "stop":
            return
        read_end, write_end = os.pipe()
        pids = []
        for _ in range(args["per_wave"]):
            pid = os.fork()
            if pid == 0:  # the reader
                os.close(read_end)
                try:
                    store = open_store(args["path"], backend=args["backend"])
                    store.get_session_messages(args["sid"], limit=5)
                    held = store.engine.read()  # kept referenced: it must not be closed
                    held.__enter__().get("meta", b"session_n")
                    os.write(write_end, b"r")
                    time.sleep(600)
                except BaseException as exc:
                    os.write(write_end, f"e{type(exc).__name__}: {exc}\n".encode())
                finally:
                    os._exit(1)
            pids.append(pid)
        os.close(write_end)
        got = b""
        while got.count(b"r") < len(pids) and b"e" not in got:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            got += chunk
        os.close(read_end)
        if b"e" in got or got.count(b"r") < len(pids):
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            print("failed", got.decode(errors="replace").replace("\n", " | "), flush=True)
            return
        print("held", *pids, flush=True)
        if sys.stdin.readline().strip() != "kill":
            return
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        print("killed", flush=True)


def map_writer(args: dict[str, Any]) -> None:
    """Write ``total`` bytes of messages from four threads; print what was acked and every failure."""
    store = open_store(args["path"], backend="lmdb", durability=args["durability"], map_size=args["map_size"])
    per_thread = args["total"] // args["value_size"] // 4
    acked: list[str] = []
    failures: list[str] = []

    def produce(thread: int) -> None:
        body = chr(ord("a") + thread) * args["value_size"]
        for i in range(per_thread):
            uuid = f"{args['prefix']}-t{thread}-{i}"
            try:
                store.create_message({"session_id": args["sid"], "message_uuid": uuid, "content": body})
                acked.append(uuid)
            except Exception as exc:
                failures.append(f"{uuid}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = store.stats()
    store.close()
    print(json.dumps({"acked": acked, "failures": failures, "map_size": stats["map_size"]}))


def disk_full(args: dict[str, Any]) -> None:
    """Write until the disk is full, check reads still work, make room, write again.

    ``fault`` is ``tmpfs`` (a ballast file fills a small filesystem; room is
    made by deleting it) or ``fsize`` (RLIMIT_FSIZE caps file size, so writes
    past it fail with EFBIG; room is made by raising the limit again).
    Prints a JSON report; the parent judges it.
    """
    report: dict[str, Any] = {"acked_before": [], "acked_after": []}
    store = open_store(args["path"], backend=args["backend"], durability="full")
    sid = store.create_session(session_id="disk")["id"]
    body = "y" * 2000

    def write(uuid: str) -> None:
        store.create_message({"session_id": sid, "message_uuid": uuid, "content": body})

    for i in range(50):
        write(f"before-{i}")
        report["acked_before"].append(f"before-{i}")
    if args["fault"] == "tmpfs":
        # Fill what is left of the filesystem.
        with open(args["ballast"], "wb") as ballast:
            try:
                while True:
                    ballast.write(b"\0" * 65536)
                    ballast.flush()
            except OSError:
                pass
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = sum(p.stat().st_size for p in Path(args["path"]).iterdir() if p.is_file())
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64 * 1024, hard))
    error: BaseException | None = None
    for i in range(5000):
        try:
            write(f"fill-{i}")
            report["acked_before"].append(f"fill-{i}")
        except BaseException as exc:
            error = exc
            break
    report["error_type"] = None if error is None else type(error).__name__
    report["error_is_storage_error"] = isinstance(error, StorageError)
    report["error"] = str(error)
    # Failing again is fine; crashing or corrupting is not.
    try:
        write("while-full")
        report["while_full"] = "written"
    except ChatMDBError as exc:
        report["while_full"] = type(exc).__name__
    page = store.get_session_messages(sid, limit=1000, direction="asc")
    report["readable_while_full"] = [m["message_uuid"] for m in page]  # type: ignore[index]
    report["verify_while_full"] = store.verify()["ok"]
    if args["fault"] == "tmpfs":
        os.remove(args["ballast"])
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for i in range(50):
        write(f"after-{i}")
        report["acked_after"].append(f"after-{i}")
    report["verify_after"] = store.verify()["ok"]
    store.close()
    print(json.dumps(report))


def inspect(args: dict[str, Any]) -> None:
    """Open each damaged copy and compare what it serves with what was written.

    Prints one line per copy, as soon as it is judged, so a crash on one copy
    still leaves the judgements before it: ``INDEX VERDICT READS``. VERDICT is
    ``open-error`` (opening raised), ``verify-error`` (verify raised or
    reported problems) or ``verify-ok``; READS is ``same`` (every read served
    exactly what was written), ``error:TYPE`` (a read raised) or ``WRONG`` (a
    read served something else). Any exception that is not a ChatMDBError
    propagates and fails the process.
    """
    expected: dict[str, dict[str, Any]] = args["expected"]
    for index, path in enumerate(args["paths"]):
        if index < args.get("start", 0):
            continue
        try:
            store = open_store(path, backend=args["backend"])
        except ChatMDBError as exc:
            print(index, "open-error", type(exc).__name__, flush=True)
            continue
        try:
            print(index, *_judge(store, expected), flush=True)
        finally:
            store.close()


def _judge(store: Any, expected: dict[str, dict[str, Any]]) -> tuple[str, str]:
    try:
        verdict = "verify-ok" if store.verify()["ok"] else "verify-error"
    except ChatMDBError:
        verdict = "verify-error"
    reads = "same"
    try:
        for uuid, message in expected.items():
            if store.get_message(uuid) != message:
                reads = "WRONG"
        sid = next(iter(expected.values()))["session_id"]
        page = store.get_session_messages(sid, limit=1000, direction="asc")
        if page != sorted(expected.values(), key=lambda m: m["seq"]):
            reads = "WRONG"
    except ChatMDBError as exc:
        reads = f"error:{type(exc).__name__}"
    return verdict, reads


COMMANDS = {
    "writer": writer,
    "mp-writer": mp_writer,
    "reader-zygote": reader_zygote,
    "map-writer": map_writer,
    "disk-full": disk_full,
    "inspect": inspect,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
