"""The ``chatmdb`` command: serve the gateway and operate on a database."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ChatMDBError
from .store import Store, open_store
from .store.backup import restore as restore_backup

DEFAULT_DB = "./chatmdb-data"

F = TypeVar("F", bound=Callable[..., Any])

_db_option = click.option(
    "--db",
    "db_path",
    default=lambda: os.environ.get("CHATMDB_PATH", DEFAULT_DB),
    show_default="$CHATMDB_PATH or ./chatmdb-data",
    help="Directory of the database.",
)
_backend_option = click.option(
    "--backend",
    type=click.Choice(["lmdb", "sqlite"]),
    default=lambda: os.environ.get("CHATMDB_BACKEND", "lmdb"),
    show_default="lmdb",
)
_durability_option = click.option(
    "--durability",
    type=click.Choice(["full", "process"]),
    default=lambda: os.environ.get("CHATMDB_DURABILITY", "full"),
    show_default="full",
    help="full: fsync every commit (survives power loss); process: survives a process crash.",
)


def _limit_options(command: F) -> F:
    """A flag for each of the gateway's limits, named, typed and described by :class:`Limits`."""
    from .gateway.guard import Limits

    for limit in reversed(dataclasses.fields(Limits)):
        command = click.option(
            "--" + limit.name.replace("_", "-"),
            limit.name,
            type=int if limit.type in ("int", int) else float,
            default=limit.default,
            show_default=True,
            help=limit.metadata["help"],
        )(command)
    return command


def _open(db_path: str, backend: str, durability: str = "full") -> Store:
    try:
        return open_store(db_path, backend=backend, durability=durability)
    except ChatMDBError as exc:
        raise click.ClickException(str(exc)) from exc


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@click.group()
@click.version_option(__version__, prog_name="chatmdb")
def main() -> None:
    """chatmdb: durable message persistence for Socket.IO chat, on LMDB."""


@main.command()
@_db_option
@_backend_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--token",
    default=lambda: os.environ.get("CHATMDB_TOKEN"),
    help="Require this token ($CHATMDB_TOKEN). On the command line other local users can read it: prefer the variable or --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the token from this file (its first line).",
)
@click.option(
    "--jwt-secret",
    default=lambda: os.environ.get("CHATMDB_JWT_SECRET"),
    help="Accept JWTs signed with this HS256 secret, at least 32 bytes ($CHATMDB_JWT_SECRET; on the command line other local users can read it).",
)
@click.option(
    "--jwt-public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Accept JWTs signed with the private half of this PEM public key (RSA: RS256, P-256: ES256).",
)
@click.option("--jwt-audience", default=None, help="Accept only JWTs whose aud names this audience.")
@click.option("--jwt-issuer", default=None, help="Accept only JWTs whose iss is this issuer.")
@click.option(
    "--cors-origins",
    default=None,
    help="Comma-separated web origins (scheme://host[:port]) whose pages may use Socket.IO and the HTTP API, "
    "or '*' for any (only with a token or JWT key). Default: the server's own origin only.",
)
@click.option(
    "--allowed-hosts",
    default=None,
    help="Comma-separated Host names to serve ('*' for any). Default: any with a token, loopback names without.",
)
@click.option(
    "--workers",
    default="1",
    show_default=True,
    help="Worker processes on the port and database: a number, or 'auto' for one per core. "
    "With more than one, Socket.IO is served over WebSocket only.",
)
@click.option(
    "--retain-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Prune messages older than this many days while serving.",
)
@click.option(
    "--retain-messages",
    type=click.IntRange(min=0),
    default=None,
    help="Keep at most this many of each session's newest messages.",
)
@click.option(
    "--backup-dir",
    default=None,
    help="Take hot backups into timestamped folders under this directory while serving "
    "(DIR/chatmdb-<UTC time>), each verified; the newest --backup-keep are kept.",
)
@click.option(
    "--backup-every",
    default=None,
    metavar="DURATION",
    help="Time between scheduled backups, like 30s, 10m, 1h or 1d.  [default: 1h]",
)
@click.option(
    "--backup-keep",
    type=click.IntRange(min=1),
    default=None,
    help="Scheduled backups kept; older ones it made are deleted.  [default: 24]",
)
@click.option(
    "--ws-deflate/--no-ws-deflate",
    default=False,
    show_default=True,
    help="WebSocket per-message compression: saves bytes on large frames, costs CPU on every frame.",
)
@_limit_options
@_durability_option
@click.option(
    "--recovery-window",
    default=120.0,
    show_default=True,
    type=float,
    help="Seconds a disconnected client's state is kept for recovery; 0 turns recovery off.",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    db_path: str,
    backend: str,
    host: str,
    port: int,
    token: str | None,
    token_file: Path | None,
    jwt_secret: str | None,
    jwt_public_key: Path | None,
    jwt_audience: str | None,
    jwt_issuer: str | None,
    cors_origins: str | None,
    allowed_hosts: str | None,
    workers: str,
    retain_days: float | None,
    retain_messages: int | None,
    backup_dir: str | None,
    backup_every: str | None,
    backup_keep: int | None,
    ws_deflate: bool,
    durability: str,
    recovery_window: float,
    log_level: str,
    **limits: Any,
) -> None:
    """Serve the Socket.IO gateway and HTTP API on an embedded database.

    Example: chatmdb serve --db ./chatmdb-data --port 8000
    """
    from .gateway import Limits
    from .gateway import serve as run_server
    from .gateway.auth import JwtSettings

    context = click.get_current_context()
    if token and context.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
        click.echo("warning: a --token on the command line is visible to other local users (ps); "
                   "use CHATMDB_TOKEN or --token-file", err=True)
    if jwt_secret and context.get_parameter_source("jwt_secret") is click.core.ParameterSource.COMMANDLINE:
        click.echo("warning: a --jwt-secret on the command line is visible to other local users (ps); "
                   "use CHATMDB_JWT_SECRET", err=True)
    if token_file is not None:
        token = token_file.read_text().splitlines()[0].strip() if token_file.read_text().strip() else None
        if not token:
            raise click.BadParameter("the token file is empty", param_hint="--token-file")
    jwt = None
    try:
        if jwt_secret and jwt_public_key is not None:
            raise click.BadParameter("give --jwt-secret or --jwt-public-key, not both", param_hint="--jwt-secret")
        if jwt_secret:
            jwt = JwtSettings.from_secret(jwt_secret, jwt_audience, jwt_issuer)
        elif jwt_public_key is not None:
            jwt = JwtSettings.from_public_key(jwt_public_key, jwt_audience, jwt_issuer)
        elif jwt_audience is not None or jwt_issuer is not None:
            raise click.BadParameter("needs --jwt-secret or --jwt-public-key", param_hint="--jwt-audience/--jwt-issuer")
    except ChatMDBError as exc:
        raise click.BadParameter(str(exc), param_hint="--jwt-secret/--jwt-public-key") from exc
    count = (os.cpu_count() or 1) if workers == "auto" else int(workers) if workers.isdigit() else 0
    if count < 1:
        raise click.BadParameter("a number >= 1, or auto", param_hint="--workers")
    try:
        gateway_limits = Limits(**limits)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    backups = None
    if backup_dir is not None:
        from .gateway.backups import BackupPolicy, parse_duration

        try:
            every = parse_duration("1h" if backup_every is None else backup_every)
        except ChatMDBError as exc:
            raise click.BadParameter(str(exc), param_hint="--backup-every") from exc
        if not backup_dir.strip():
            raise click.BadParameter("must name a directory", param_hint="--backup-dir")
        try:
            backups = BackupPolicy(Path(backup_dir), every, 24 if backup_keep is None else backup_keep)
            backups.check_outside(db_path)
        except ChatMDBError as exc:
            raise click.BadParameter(str(exc), param_hint="--backup-dir") from exc
    elif backup_every is not None or backup_keep is not None:
        raise click.BadParameter("scheduled backups need --backup-dir", param_hint="--backup-every/--backup-keep")
    try:
        run_server(
            db_path=db_path,
            backend=backend,
            host=host,
            port=port,
            token=token or None,
            durability=durability,
            recovery_window=recovery_window,
            log_level=log_level,
            limits=gateway_limits,
            ws_deflate=ws_deflate,
            workers=count,
            retain_days=retain_days,
            retain_messages=retain_messages,
            backups=backups,
            jwt=jwt,
            cors_origins=None if cors_origins is None else [o.strip() for o in cors_origins.split(",") if o.strip()],
            allowed_hosts=None if allowed_hosts is None else [h.strip() for h in allowed_hosts.split(",") if h.strip()],
        )
    except ChatMDBError as exc:  # a database of a newer format, in use, not writable...
        raise click.ClickException(str(exc)) from exc


@main.command()
@_db_option
@_backend_option
def init(db_path: str, backend: str) -> None:
    """Create the database with the default agents and session, and print its stats.

    Example: chatmdb init --db ./chatmdb-data
    """
    with _open(db_path, backend) as store:
        store.init_database()
        _print(store.stats())


@main.command()
@_db_option
@_backend_option
def stats(db_path: str, backend: str) -> None:
    """Print record counts and database sizes as JSON.

    Example: chatmdb stats --db ./chatmdb-data
    """
    with _open(db_path, backend) as store:
        _print(store.stats())


@main.command()
@_db_option
@_backend_option
def verify(db_path: str, backend: str) -> None:
    """Check every record, index entry and counter; exit 1 if anything is wrong.

    Example: chatmdb verify --db ./chatmdb-data
    """
    try:
        with _open(db_path, backend) as store:
            report = store.verify()
    except ChatMDBError as exc:
        _print({"ok": False, "errors": [str(exc)], "error_count": 1})
        sys.exit(1)
    _print(report)
    if not report["ok"]:
        sys.exit(1)


@main.command()
@_db_option
@_backend_option
@click.argument("dest")
def backup(db_path: str, backend: str, dest: str) -> None:
    """Write a consistent copy of the database to DEST while it is in use.

    Example: chatmdb backup --db ./chatmdb-data ./backups/2026-11-26
    """
    with _open(db_path, backend) as store:
        try:
            _print(store.backup(dest))
        except ChatMDBError as exc:
            raise click.ClickException(str(exc)) from exc


@main.command()
@_db_option
@_backend_option
@click.option("--force", is_flag=True, help="Replace a database that exists at --db.")
@click.argument("source")
def restore(db_path: str, backend: str, source: str, force: bool) -> None:
    """Restore a backup made by `chatmdb backup` into --db (the server must be stopped).

    SOURCE must hold a complete chatmdb database of --backend; it is copied
    aside and verified before it replaces anything, and the replaced database
    is kept as DB.before-restore-<time> until the restored one verifies.

    Example: chatmdb restore --db ./chatmdb-data ./backups/2026-11-26
    """
    try:
        report = restore_backup(source, db_path, backend=backend, force=force)
    except ChatMDBError as exc:
        raise click.ClickException(str(exc)) from exc
    _print(report)


@main.command()
@_db_option
@_backend_option
@click.option("--older-than-days", type=float, default=None, help="Remove messages created more than this many days ago.")
@click.option("--keep-last", type=int, default=None, help="Keep at most this many of each session's newest messages.")
@click.option("--session", "session_id", default=None, help="Only this session.")
def prune(db_path: str, backend: str, older_than_days: float | None, keep_last: int | None, session_id: str | None) -> None:
    """Remove each session's oldest messages (a prefix in seq order); print how many.

    Example: chatmdb prune --db ./chatmdb-data --older-than-days 90 --keep-last 10000
    """
    older_than = None if older_than_days is None else datetime.now(UTC) - timedelta(days=older_than_days)
    with _open(db_path, backend) as store:
        try:
            _print(store.prune(older_than=older_than, keep_last=keep_last, session_id=session_id))
        except ChatMDBError as exc:
            raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--quick", is_flag=True, help="Smaller sizes and shorter runs: under 2 minutes.")
@click.option("--out", "out_dir", default="./bench-results", show_default=True, help="Directory for the results.")
@click.option("--only", default=None, help="Comma-separated workloads: write,raw,reads,mixed,gateway.")
@click.option("--keep", is_flag=True, help="Keep the benchmark databases under OUT/work.")
def bench(quick: bool, out_dir: str, only: str | None, keep: bool) -> None:
    """Benchmark LMDB against SQLite through the store and the gateway; print tables, write JSON and a plot.

    Example: chatmdb bench --quick --out ./bench-results
    """
    from .bench import WORKLOADS, BenchFailure, Config, run

    workloads = WORKLOADS if only is None else tuple(w.strip() for w in only.split(",") if w.strip())
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise click.BadParameter(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    command = "chatmdb bench" + (" --quick" if quick else "") + (f" --only {only}" if only else "")
    preset = Config.quick if quick else Config.full
    config = preset(Path(out_dir), workloads=workloads, keep=keep, command=command)
    try:
        results = run(config)
    except BenchFailure as exc:
        raise click.ClickException(f"benchmark check failed: {exc}") from exc
    from .bench.report import markdown

    click.echo(markdown(results))
    click.echo(f"Wrote {Path(out_dir) / 'results.json'}, report.md and bench.png", err=True)


@main.command()
@_db_option
@_backend_option
def compact(db_path: str, backend: str) -> None:
    """Rewrite the database without the free space deleted records left (the server must be stopped).

    Neither engine shrinks its file when records are deleted. This writes a
    compacted copy beside the database, verifies it, swaps it in (the old one
    is kept as DB.before-compact-<time> until the new one verifies, and put
    back if it does not) and prints the sizes before and after. Refused while
    any store or server has the database open.

    Example: chatmdb compact --db ./chatmdb-data
    """
    from .store.compact import compact as compact_database

    try:
        report = compact_database(db_path, backend)
    except ChatMDBError as exc:
        raise click.ClickException(str(exc)) from exc
    _print(report)


# -- export, import and migrate --------------------------------------------------------


class _RecordCounter:
    """``progress(done, total)`` drawn as a counter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = sys.stderr.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if self.shown:
            of = f" of {total:,}" if total else ""
            sys.stderr.write(f"\r{self.label}: {done:,}{of} records")
            sys.stderr.flush()
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _require_database(db_path: str, backend: str) -> None:
    from .store.export import ENGINE_FILES

    if not any((Path(db_path) / name).is_file() for name in ENGINE_FILES[backend]):
        raise click.ClickException(f"{db_path} holds no {backend} database")


def _open_export(file: str) -> Any:
    # Undecodable bytes become lone surrogates, which the import refuses naming their line.
    try:
        return open(file, encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror or exc}") from exc


def _export_to_file(store: Store, output: Path, progress: _RecordCounter) -> dict[str, int]:
    """Export into a private file beside *output*, renamed to it only once complete."""
    from .store.export import export

    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            counts = export(store, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, output)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return counts


def _store_spec(spec: str, option: str) -> tuple[str, str]:
    backend, _, path = spec.partition(":")
    if backend not in ("lmdb", "sqlite") or not path:
        raise click.BadParameter(f"expected lmdb:PATH or sqlite:PATH, not {spec!r}", param_hint=option)
    return backend, path


@main.command("export")
@_db_option
@_backend_option
@click.option("-o", "--output", default=None, help="Write the export to this file (default: standard output).")
def export_command(db_path: str, backend: str, output: str | None) -> None:
    """Write every session, message, agent card, shared context and task as JSON Lines.

    The export is read from one transaction: a consistent snapshot while the
    database is in use. Load it with `chatmdb import`. Counts go to stdout
    with -o, to stderr without.

    Example: chatmdb export --db ./chatmdb-data -o chatmdb.jsonl
    """
    import io

    from .store.export import export

    _require_database(db_path, backend)
    progress = _RecordCounter("export")
    with _open(db_path, backend) as store:
        try:
            if output is None or output == "-":
                stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
                try:
                    counts = export(store, stream, progress)
                finally:
                    stream.flush()
                    stream.detach()
            else:
                counts = _export_to_file(store, Path(output), progress)
        except ChatMDBError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            progress.close()
    to_stdout = output is not None and output != "-"
    click.echo(json.dumps({"exported": counts, "path": output or "-"}, indent=2, sort_keys=True), err=not to_stdout)


@main.command("import")
@_db_option
@_backend_option
@click.option("--merge", is_flag=True, help="Add to a database that holds records, skipping the ids it holds.")
@click.argument("file")
def import_command(db_path: str, backend: str, merge: bool, file: str) -> None:
    """Load FILE, an export of `chatmdb export` (- for standard input), into an empty database.

    Ids, seq numbers, timestamps, context versions and task states are kept.
    The database is built beside --db and moved into place only once complete
    and verified, so a failed import leaves --db as it was. With --merge the
    export is added to the database there: records whose ids it holds are
    skipped and reported, and the file is checked whole before anything is
    written (not for standard input).

    Example: chatmdb import --db ./chatmdb-data chatmdb.jsonl
    """
    import io

    from .store.export import check_export, import_

    progress = _RecordCounter("import")
    try:
        if file == "-":
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="\n")
            result = import_(db_path, stdin, merge, backend=backend, progress=progress)
        else:
            if merge:  # a merge writes into the database as it goes: check the file first
                with _open_export(file) as lines:
                    check_export(lines)
            with _open_export(file) as lines:
                result = import_(db_path, lines, merge, backend=backend, progress=progress)
    except ChatMDBError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    finally:
        progress.close()
    _print(result)


@main.command("migrate")
@click.option("--from", "source", required=True, metavar="BACKEND:PATH", help="The database to copy, e.g. lmdb:./chatmdb-data.")
@click.option("--to", "dest", required=True, metavar="BACKEND:PATH", help="A new or empty database, e.g. sqlite:./chatmdb-sqlite.")
@click.option("--merge", is_flag=True, help="Add to a database that holds records, skipping the ids it holds.")
def migrate_command(source: str, dest: str, merge: bool) -> None:
    """Copy a database to another backend or place: its export piped into an import.

    Everything `chatmdb import` keeps is kept; the copy is built beside the
    target and moved into place once complete and verified.

    Example: chatmdb migrate --from lmdb:./chatmdb-data --to sqlite:./chatmdb-sqlite
    """
    from .store.export import migrate

    src_backend, src_path = _store_spec(source, "--from")
    dst_backend, dst_path = _store_spec(dest, "--to")
    _require_database(src_path, src_backend)
    progress = _RecordCounter("migrate")
    try:
        with _open(src_path, src_backend) as store:
            result = migrate(store, dst_path, backend=dst_backend, merge=merge, progress=progress)
    except ChatMDBError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        progress.close()
    _print(result)


if __name__ == "__main__":  # pragma: no cover
    main()
