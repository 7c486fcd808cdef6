"""Many cases: a manifest, an executor (local processes or a dask.distributed cluster).

- Manifest: a CSV with ``case_id,fluoro,ultrasound,rdsr,landmarks`` (the last two may be
  empty; several files in one cell are separated by ``;``; extra columns are ignored;
  relative paths resolve against the manifest's folder), or a folder of case folders.
  A ``landmarks`` CSV refers to the pair that is registered: the first fluoroscopy frame
  acquired within 0.5 s of an ultrasound frame (first run in manifest order).
- A case id names a folder inside the output folder, so it must be a safe name
  (:func:`hybridfuse._safeio.check_case_id`) and unique after normalisation
  (:func:`hybridfuse._safeio.case_key`: ``C1`` and ``c1`` are one folder on many file systems);
  a bad or repeated id is a failed row, not a reason to stop.
- The output folder may not equal or contain any input or the manifest; it is created
  with hybridfuse's owner marker, or must be empty or carry that marker already. Each
  case folder inside is replaced only when hybridfuse wrote it.
- A case whose folder holds a ``summary.json`` with status ok and the same input hash
  (inputs, configuration, software version) is skipped: re-runs are idempotent.
- One bad case never stops the batch, nor does a case folder whose discovery fails. A
  worker that dies is retried (bounded), then the case is reported; workers die with
  their parent. ``batch_summary.csv`` gets one appended row per finished case, and is
  rewritten once in manifest order at the end.
- Workers read inputs by path: on a cluster every worker must see the same paths (a
  shared filesystem mounted at the same place) and be able to write to the output folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from hybridfuse._safeio import (
    UnsafeOutputError,
    case_key,
    check_case_id,
    check_out_separate,
    clean_stale,
    csv_cell,
    is_owned,
    one_line,
    write_owner_mark,
    write_text,
)

from .errors import InputError
from .pipeline import (
    CaseSpec,
    RunConfig,
    case_from_folder,
    check_out,
    input_hash,
    is_output_folder,
    run_case,
    unpaired_runs,
)
from .us_pairing import PAIRING_LIMIT_S

__all__ = [
    "read_manifest",
    "run_batch",
    "check_out_root",
    "check_scheduler_address",
    "prepare_out_root",
    "SUMMARY_COLUMNS",
]

SUMMARY_COLUMNS = [
    "case_id",
    "status",
    "wall_time_s",
    "tre_median_mm",
    "registration_quality",
    "dap_total_gy_cm2",
    "saved_dap_gy_cm2",
    "message",
]


def _problem(case_id: str, message: str, position: int) -> dict:
    # position: how many cases precede it, so the summary keeps the manifest's order
    return {"case_id": case_id, "status": "failed", "message": message, "position": position}


def _one_line(exc: BaseException) -> str:
    text = one_line(exc)
    return text or type(exc).__name__


def read_manifest(path: str | os.PathLike) -> tuple[list[CaseSpec], list[dict]]:
    """Cases of a manifest and the per-case problems found while reading it.

    A row (or case folder) with an unsafe or repeated case id, or a case folder whose
    discovery fails, becomes a problem (a failed row later) and the others still run.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a manifest CSV or a folder of cases)")
    try:
        # utf-8-sig: Excel writes a byte-order mark before the header.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            # the file's line (blank lines are skipped, not counted away)
            rows = [(reader.line_num, row) for row in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from exc
    required = ["case_id", "fluoro", "ultrasound"]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{path}: manifest lacks column(s) {', '.join(missing)}; expected "
            "case_id,fluoro,ultrasound,rdsr,landmarks"
        )
    if not rows:
        raise InputError(f"{path}: no cases (only a header)")
    base = path.parent

    def resolve(cell: str | None) -> list[str]:
        return [
            str(p if Path(p).is_absolute() else base / p)
            for p in (c.strip() for c in (cell or "").split(";"))
            if p
        ]

    ids = _CaseIds()
    specs, problems = [], []
    for i, row in rows:
        cid = row.get("case_id")
        cid = cid.strip() if isinstance(cid, str) else ""
        why = ids.problem(cid)
        if why:
            shown = cid if cid and not why.startswith("duplicate") else f"{cid} (line {i})"
            problems.append(_problem(shown.strip(), f"{path}:{i}: {why}", len(specs)))
            continue
        nul = [k for k, v in row.items() if isinstance(v, str) and "\0" in v]
        if nul:  # no path holds a NUL byte; os calls refuse it with a ValueError
            where = ", ".join(str(k) for k in nul)
            problems.append(_problem(cid, f"{path}:{i}: a NUL byte in {where}", len(specs)))
            continue
        rdsr = resolve(row.get("rdsr"))
        lms = resolve(row.get("landmarks"))
        specs.append(
            CaseSpec(
                case_id=cid,
                fluoro=tuple(resolve(row.get("fluoro"))),
                ultrasound=tuple(resolve(row.get("ultrasound"))),
                rdsr=rdsr[0] if rdsr else None,
                landmarks=lms[0] if lms else None,
            )
        )
    return specs, problems


class _CaseIds:
    """Says why a case id cannot be used: unsafe as a folder name, or already taken."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def problem(self, cid: str) -> str | None:
        if not cid:
            return "empty case_id"
        try:
            check_case_id(cid)
        except UnsafeOutputError as exc:
            return str(exc)
        key = case_key(cid)
        if key in self.seen:
            first = self.seen[key]
            if first == cid:
                return f"duplicate case_id {cid!r}: the manifest names it twice; not run twice"
            return (
                f"duplicate case_id {cid!r}: the same folder as {first!r} on a file system "
                "that ignores case; not run twice"
            )
        self.seen[key] = cid
        return None


def _read_folder(path: Path) -> tuple[list[CaseSpec], list[dict]]:
    """Every case folder inside ``path``; outputs of hybridfuse inside it are not cases."""
    try:
        subs = sorted(
            p
            for p in path.iterdir()
            if p.is_dir() and not p.name.startswith(".") and not is_output_folder(p)
        )
    except OSError as exc:
        raise InputError(f"{path}: cannot list the folder ({exc.strerror})") from exc
    if not subs:
        raise InputError(f"{path}: no case folders inside")
    ids = _CaseIds()
    specs, problems = [], []
    for sub in subs:
        why = ids.problem(sub.name)
        if why:
            problems.append(_problem(sub.name, f"{sub}: {why}", len(specs)))
            continue
        try:
            specs.append(case_from_folder(sub))
        except Exception as exc:  # one unreadable case folder never stops the others
            said = _one_line(exc)
            said = said if said.startswith(f"{sub}:") else f"{sub}: {said}"
            problems.append(_problem(sub.name, said, len(specs)))
    return specs, problems


def _up_to_date(spec: CaseSpec, out: Path, config: RunConfig) -> bool:
    summary = out / "summary.json"
    if not summary.is_file():
        return False
    try:  # hashing a FIFO or /dev/zero would never end: the case run refuses them
        if not all(Path(p).is_file() for p in spec.files()):
            return False
    except (OSError, ValueError):
        return False
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        if data.get("status") != "ok" or not all((out / o).is_file() for o in data["outputs"]):
            return False
        return data.get("input_hash") == input_hash(spec, config)
    except (OSError, ValueError, KeyError, InputError):
        return False


def _row(spec_id: str, status: str, wall: float, summary: dict | None, message: str = "") -> dict:
    tre = ((summary or {}).get("registration") or {}).get("tre") or {}
    quality = ((summary or {}).get("registration") or {}).get("quality") or {}
    unpaired = unpaired_runs(summary or {})  # labels (file names only with --include-phi)
    if unpaired and not message:
        message = f"no ultrasound file within {PAIRING_LIMIT_S:g} s of: {'; '.join(unpaired)}"
    return {
        "case_id": spec_id,
        "status": status,
        "wall_time_s": round(wall, 3),
        "tre_median_mm": tre.get("median_mm"),
        "registration_quality": quality.get("intensity_refinement", ""),
        "dap_total_gy_cm2": ((summary or {}).get("dose") or {}).get("dap_total_gy_cm2"),
        "saved_dap_gy_cm2": ((summary or {}).get("dose") or {}).get("saved_dap_gy_cm2"),
        "message": message,
    }


def run_one(spec_dict: dict, out_root: str, config_dict: dict) -> dict:
    """Run one case; never raises (a failure is a row). Top-level so that it pickles."""
    try:
        _WORKER["in_case"] = True
        row = _run_one(spec_dict, out_root, config_dict)
        _WORKER["in_case"] = False
        return row
    except _Terminated as exc:
        # The case's temporary folder is gone already (the exception unwound through it).
        # Exit now: the executor would report the exception and hand over the next case.
        os._exit(exc.code)


def _run_one(spec_dict: dict, out_root: str, config_dict: dict) -> dict:
    t0 = time.perf_counter()
    spec = CaseSpec.from_dict(spec_dict)
    config = RunConfig.from_dict(config_dict)
    try:
        check_case_id(spec.case_id)  # the folder name, checked again where it is used
        summary = run_case(spec, Path(out_root) / spec.case_id, config, overwrite=True)
        return _row(spec.case_id, "ok", time.perf_counter() - t0, summary)
    except Exception as exc:  # one bad case never stops the batch
        said = _one_line(exc)  # the terminal's, naming files as given
        # batch_summary.csv is written: no file names there without --include-phi.
        message = said if config.fusion.include_phi else _without_file_names(said, spec)
        row = _row(spec.case_id, "failed", time.perf_counter() - t0, None, message)
        return {**row, "said": said}


def _without_file_names(message: str, spec: CaseSpec) -> str:
    """``message`` naming each input by its role (``fluoroscopy 2``), not its path or name.

    Errors name files as given, for the terminal; files are often named after the patient.
    """
    roles = [(f"fluoroscopy {n}", p) for n, p in enumerate(spec.fluoro, 1)]
    roles += [(f"ultrasound {n}", p) for n, p in enumerate(spec.ultrasound, 1)]
    roles += [(r, p) for r, p in (("RDSR", spec.rdsr), ("landmarks", spec.landmarks)) if p]
    roles += [("truth", spec.truth)] if spec.truth else []
    names = {str(p): role for role, p in roles}
    names.update({Path(p).name: role for role, p in roles if Path(p).name not in names})
    for name in sorted(names, key=len, reverse=True):  # a path before the name it ends with
        message = message.replace(name, names[name])
    return message


def _csv_text(rows: Iterable[dict], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell("" if r.get(k) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    return buf.getvalue()


class _SummaryLog:
    """``batch_summary.csv``: one appended row per finished case, ordered once at the end.

    Rewriting the whole file after every case made a batch quadratic in its rows. The
    file is first created through an exclusive temporary name (never through a planted
    link), then appended to through a descriptor that refuses links.
    """

    def __init__(self, path: Path, rows: list[dict]) -> None:
        self.path = path
        write_text(path, _csv_text(rows, header=True))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def append(self, row: dict) -> None:
        self.fh.write(_csv_text([row], header=False))
        self.fh.flush()

    def close(self, final_rows: list[dict] | None = None) -> None:
        self.fh.close()
        if final_rows is not None:
            write_text(self.path, _csv_text(final_rows, header=True))


def check_out_root(out_root: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse a batch output folder that is unsafe, before any work (exit 2).

    Like :func:`fusion.pipeline.check_out`, and an existing non-empty folder must carry
    hybridfuse's owner marker (an earlier batch), so a batch never writes among someone
    else's files.
    """
    out_root, inputs = Path(out_root), list(inputs)
    try:
        foreign = (
            out_root.is_dir()
            and not out_root.is_symlink()
            and not is_owned(out_root)
            and any(out_root.iterdir())
        )
    except OSError as exc:  # a name too long, a folder that cannot be listed, ...
        raise UnsafeOutputError(f"--out {out_root}: unusable ({exc.strerror})") from exc
    if foreign:
        check_out_separate(out_root, inputs)  # an input inside is the clearer message
        raise UnsafeOutputError(
            f"{out_root}: exists, is not empty and is not an earlier batch's output; "
            "choose another --out"
        )
    check_out(out_root, inputs, overwrite=True)


def prepare_out_root(out_root: Path, inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Check and claim the batch output folder before any work; returns stale leftovers removed.

    See :func:`check_out_root`; a new or empty folder gets the owner marker, so that a
    re-run into it is accepted.
    """
    check_out_root(out_root, inputs)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        if not is_owned(out_root):
            write_owner_mark(out_root)
    except OSError as exc:
        raise UnsafeOutputError(f"{out_root}: cannot write ({exc.strerror})") from exc
    return clean_stale(out_root)


def run_batch(
    specs: list[CaseSpec],
    out_root: str | os.PathLike,
    config: RunConfig,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    retries: int = 1,
    problems: list[dict] | None = None,
    progress: Callable[[dict, int, int], None] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    on_stale: Callable[[list[str]], None] | None = None,
) -> list[dict]:
    """Run cases; returns one row per case (ok, skipped, failed) in manifest order.

    ``inputs`` are further paths the output folder may not touch (the manifest itself);
    ``on_stale`` hears the names of dead runs' leftovers removed from ``out_root``.
    """
    out_root = Path(out_root)
    if scheduler:
        check_scheduler_address(scheduler)  # before the output folder is touched
    removed = prepare_out_root(out_root, [*inputs, *(f for s in specs for f in s.inputs())])
    if removed and on_stale is not None:
        on_stale(removed)
    rows, todo = _plan(specs, problems or [], out_root, config)
    log = _SummaryLog(out_root / "batch_summary.csv", [r for r in rows if r is not None])
    done = sum(r is not None for r in rows)

    def record(k: int, row: dict) -> None:
        nonlocal done
        rows[k] = row
        done += 1
        log.append(row)
        if progress is not None:
            progress(row, done, len(rows))

    try:
        if scheduler:
            _run_dask(todo, scheduler, retries, record)
        elif workers <= 1:
            for k, a in todo:
                record(k, run_one(*a))
        else:
            _run_processes(todo, workers, retries, record)
    except BaseException:
        log.close()
        raise
    log.close(rows)
    return rows


def _plan(specs, problems, out_root: Path, config: RunConfig) -> tuple[list, list]:
    """Rows known before any case runs (refused, up to date) in manifest order; cases to run.

    Returns the rows (``None`` where a case is still to run) and ``(row index, run_one
    arguments)`` of each case to run.
    """
    waiting = deque(sorted(problems, key=lambda p: p.get("position", 0)))
    rows: list[dict | None] = []
    todo = []
    ids = _CaseIds()
    for j, spec in enumerate([*specs, None]):
        while waiting and (spec is None or waiting[0].get("position", 0) <= j):
            p = waiting.popleft()
            rows.append(_row(p["case_id"], "failed", 0.0, None, p["message"]))
        if spec is None:
            break
        why = ids.problem(spec.case_id)
        if why:
            rows.append(_row(spec.case_id, "failed", 0.0, None, why))
        elif _up_to_date(spec, out_root / spec.case_id, config):
            summary = json.loads((out_root / spec.case_id / "summary.json").read_text("utf-8"))
            rows.append(_row(spec.case_id, "skipped (up to date)", 0.0, summary))
        else:
            todo.append((len(rows), (spec.to_dict(), str(out_root), config.to_dict())))
            rows.append(None)
    return rows, todo


def _worker_init(parent: int) -> None:
    """Set up a worker: die with the parent, unwind on SIGTERM, one Numba thread.

    A worker that outlives a killed parent would go on writing cases nobody waits for.
    Linux kills it at once (``PR_SET_PDEATHSIG``); elsewhere, or if that fails, a watcher
    thread ends it within a second of the parent's death.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGTERM, _unwind)
    _one_thread_per_worker()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


class _Terminated(BaseException):
    """SIGTERM in a worker process: unwind the case being written, then exit."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


#: ``in_case`` is True while a worker runs a case: only then has SIGTERM a folder to unwind.
_WORKER = {"in_case": False}


def _unwind(signum, _frame) -> None:
    """SIGTERM unwinds the case, so its temporary folder is removed on the way out.

    An idle worker (waiting for the next case) exits at once: an exception raised there
    would surface as a traceback from the executor's own loop.
    """
    if not _WORKER["in_case"]:
        os._exit(128 + signum)
    raise _Terminated(128 + signum)


def _one_thread_per_worker() -> None:
    """Processes already share the cores: one Numba thread each avoids oversubscription."""
    import numba

    numba.set_num_threads(1)


def _run_processes(todo, workers, retries, record) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pending = list(todo)
    attempts = {k: 0 for k, _ in todo}
    # "spawn", not fork: Numba's OpenMP threads make a forked child abort once the
    # parent has run a parallel kernel.
    context = multiprocessing.get_context("spawn")
    while pending:
        broken = []
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        ) as pool:
            try:
                futures = {pool.submit(run_one, *a): (k, a) for k, a in pending}
                for fut in as_completed(futures):
                    k, a = futures[fut]
                    try:
                        record(k, fut.result())
                    except BrokenProcessPool:
                        broken.append((k, a))
            except BaseException:  # SIGTERM or Ctrl-C: stop the workers, not wait for them
                _stop(pool)
                raise
        pending = []
        for k, a in broken:
            attempts[k] += 1
            if attempts[k] > retries:
                msg = f"worker process died {attempts[k]} time(s) on this case"
                record(k, _row(a[0]["case_id"], "failed", 0.0, None, msg))
            else:
                pending.append((k, a))


def _stop(pool) -> None:
    """Cancel queued cases and SIGTERM running workers (each removes its temporary folder)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        try:
            proc.terminate()
        except (OSError, ValueError):
            pass


def _run_dask(todo, scheduler, retries, record) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise InputError(
            "--scheduler needs dask.distributed (pip install 'dask[distributed]')"
        ) from exc
    with _connect(Client, scheduler) as client:
        futures = {
            client.submit(
                run_one, *a, key=f"hybridfuse-{k}-{a[0]['case_id']}", retries=retries, pure=False
            ): (k, a)
            for k, a in todo
        }
        for fut in as_completed(list(futures)):
            k, a = futures[fut]
            try:
                record(k, fut.result())
            except Exception as exc:  # the task failed on every retry (worker lost, ...)
                msg = f"dask task failed after {retries} retries: {_one_line(exc)}"
                record(k, _row(a[0]["case_id"], "failed", 0.0, None, msg))


#: Seconds to reach a dask scheduler before giving up (dask's default is 30).
SCHEDULER_TIMEOUT_S = 10


def _connect(client_class, scheduler: str):
    """A dask client, or InputError naming an address that is malformed or unreachable."""
    try:
        return client_class(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as exc:  # TimeoutError is an OSError
        why = _one_line(exc)[:200]
        raise InputError(f"cannot reach the dask scheduler {scheduler} ({why})") from exc


_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ucx|ws|wss)://)?(?:\[[0-9A-Fa-f:.]+\]|[\w.\-]+):(\d{1,5})$")


def check_scheduler_address(scheduler: str) -> None:
    """Refuse a --scheduler that is not ``[tcp://]HOST:PORT`` (InputError, exit 2)."""
    m = _ADDRESS.match(scheduler.strip())
    if not m or not 0 < int(m.group(1)) < 65536:
        raise InputError(
            f"--scheduler {scheduler[:200]!r}: expected a dask scheduler address "
            "such as tcp://10.0.0.5:8786 (scheme, host and port)"
        )
