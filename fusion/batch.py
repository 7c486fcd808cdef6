"""Many cases: a manifest, an executor (local processes or a dask.distributed cluster).

- Manifest: a CSV with ``case_id,fluoro,ultrasound,rdsr,landmarks`` (the last two may be
  empty; several files in one cell are separated by ``;``; extra columns are ignored;
  relative paths resolve against the manifest's folder), or a folder of case folders.
  A ``landmarks`` CSV refers to the pair that is registered: the first fluoroscopy frame
  acquired within 0.5 s of an ultrasound frame (first run in manifest order).
- A case whose folder holds a ``summary.json`` with status ok and the same input hash
  (inputs, configuration, software version) is skipped: re-runs are idempotent.
- One bad case never stops the batch. A worker that dies is retried (bounded), then the
  case is reported. ``batch_summary.csv`` is rewritten after every case.
- Workers read inputs by path: on a cluster every worker must see the same paths (a
  shared filesystem mounted at the same place) and be able to write to the output folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .pipeline import CaseSpec, RunConfig, case_from_folder, input_hash, run_case

__all__ = ["read_manifest", "run_batch", "SUMMARY_COLUMNS"]

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


def read_manifest(path: str | os.PathLike) -> tuple[list[CaseSpec], list[dict]]:
    """Cases of a manifest and the per-case problems found while reading it."""
    path = Path(path)
    problems: list[dict] = []
    if path.is_dir():
        specs = []
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            specs.append(case_from_folder(sub))
        if not specs:
            raise InputError(f"{path}: no case folders inside")
        return specs, problems
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from exc
    required = ["case_id", "fluoro", "ultrasound"]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{path}: manifest lacks column(s) {', '.join(missing)}; expected "
            "case_id,fluoro,ultrasound,rdsr,landmarks"
        )
    base = path.parent

    def resolve(cell: str | None) -> list[str]:
        return [
            str(p if Path(p).is_absolute() else base / p)
            for p in (c.strip() for c in (cell or "").split(";"))
            if p
        ]

    seen: set[str] = set()
    specs = []
    for i, row in enumerate(rows, start=2):
        cid = (row.get("case_id") or "").strip()
        if not cid:
            problems.append(
                {
                    "case_id": f"(line {i})",
                    "status": "failed",
                    "message": f"{path}:{i}: empty case_id",
                }
            )
            continue
        if cid in seen:
            problems.append(
                {
                    "case_id": f"{cid} (duplicate, line {i})",
                    "status": "failed",
                    "message": f"{path}:{i}: duplicate case_id {cid!r}; not run twice",
                }
            )
            continue
        seen.add(cid)
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


def _up_to_date(spec: CaseSpec, out: Path, config: RunConfig) -> bool:
    summary = out / "summary.json"
    if not summary.is_file():
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
    t0 = time.perf_counter()
    spec = CaseSpec.from_dict(spec_dict)
    config = RunConfig(**config_dict)
    try:
        summary = run_case(spec, Path(out_root) / spec.case_id, config, overwrite=True)
        return _row(spec.case_id, "ok", time.perf_counter() - t0, summary)
    except Exception as exc:  # one bad case never stops the batch
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _row(spec.case_id, "failed", time.perf_counter() - t0, None, msg)


def _write_summary(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


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
) -> list[dict]:
    """Run cases; returns one row per case (ok, skipped, failed) in manifest order."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    order = [p["case_id"] for p in (problems or [])] + [s.case_id for s in specs]
    for p in problems or []:
        rows[p["case_id"]] = _row(p["case_id"], "failed", 0.0, None, p["message"])
    todo = []
    for spec in specs:
        if _up_to_date(spec, out_root / spec.case_id, config):
            rows[spec.case_id] = _row(
                spec.case_id,
                "skipped (up to date)",
                0.0,
                json.loads((out_root / spec.case_id / "summary.json").read_text(encoding="utf-8")),
            )
        else:
            todo.append(spec)
    summary_path = out_root / "batch_summary.csv"

    def record(row: dict) -> None:
        rows[row["case_id"]] = row
        _write_summary(summary_path, [rows[c] for c in order if c in rows])
        if progress is not None:
            progress(row, len(rows), len(order))

    _write_summary(summary_path, [rows[c] for c in order if c in rows])
    args = [(s.to_dict(), str(out_root), config.to_dict()) for s in todo]
    if scheduler:
        _run_dask(args, scheduler, retries, record)
    elif workers <= 1:
        for a in args:
            record(run_one(*a))
    else:
        _run_processes(args, workers, retries, record)
    return [rows[c] for c in order]


def _one_thread_per_worker() -> None:
    """Processes already share the cores: one Numba thread each avoids oversubscription."""
    import numba

    numba.set_num_threads(1)


def _run_processes(args, workers, retries, record) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pending = list(args)
    attempts = {a[0]["case_id"]: 0 for a in args}
    # "spawn", not fork: Numba's OpenMP threads make a forked child abort once the
    # parent has run a parallel kernel.
    context = multiprocessing.get_context("spawn")
    while pending:
        broken = []
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_one_thread_per_worker
        ) as pool:
            futures = {pool.submit(run_one, *a): a for a in pending}
            for fut in as_completed(futures):
                a = futures[fut]
                try:
                    record(fut.result())
                except BrokenProcessPool:
                    broken.append(a)
        pending = []
        for a in broken:
            cid = a[0]["case_id"]
            attempts[cid] += 1
            if attempts[cid] > retries:
                record(
                    _row(
                        cid,
                        "failed",
                        0.0,
                        None,
                        f"worker process died {attempts[cid]} time(s) on this case",
                    )
                )
            else:
                pending.append(a)


def _run_dask(args, scheduler, retries, record) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise InputError(
            "--scheduler needs dask.distributed (pip install 'dask[distributed]')"
        ) from exc
    with Client(scheduler) as client:
        futures = [
            client.submit(
                run_one, *a, key=f"hybridfuse-{a[0]['case_id']}", retries=retries, pure=False
            )
            for a in args
        ]
        ids = {f.key: a[0]["case_id"] for f, a in zip(futures, args, strict=True)}
        for fut in as_completed(futures):
            try:
                record(fut.result())
            except Exception as exc:  # the task failed on every retry (worker lost, ...)
                record(
                    _row(
                        ids[fut.key],
                        "failed",
                        0.0,
                        None,
                        f"dask task failed after {retries} retries: {exc}",
                    )
                )
