"""A local dose registry (SQLite, embedded, no server); its audit is :mod:`dose.audit`.

Ingestion is idempotent: a procedure is identified by the sha256 of the dose report it
came from, so ingesting the same report twice changes nothing. A different report that
reuses a SOP Instance UID already in the registry is a distinct procedure: it is stored,
and the conflict is recorded and reported, never silently dropped.

De-identification: patients, studies and UIDs appear only as keyed pseudonyms
(HMAC-SHA256 under a random secret kept in the registry); dates and times are shifted by
a keyed per-patient offset of 1-3653 whole days (DICOM PS3.15 Basic Application
Confidentiality Profile with the Retain Longitudinal Temporal Information with Modified
Dates Option: intervals within a patient are kept, calendar dates are not); input files
are named by their label (role and sha256, :mod:`.inputs`), by file name only when
ingested with ``--include-phi``.

A registry is recognised by its SQLite application_id and a signature row in ``meta``;
any other database is refused unmodified. Creation and ingestion run in ``BEGIN
IMMEDIATE`` transactions with a busy timeout, so concurrent processes queue, not fail.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
from pathlib import Path

from .errors import DoseError, DoseInputError
from .monthly import month_index, month_shift
from .pseudonym import pseudonym as _keyed
from .units import DELIVERED_KEYS, PLAUSIBLE_MAX

__all__ = ["Registry", "upper_bound", "validate_report"]

#: SQLite ``PRAGMA application_id`` of a hybridfuse registry ("HFRG").
APPLICATION_ID = 0x48465247
SCHEMA = "hybridfuse.registry/2"
_LEGACY_SCHEMA = "hybridfuse.registry/1"
#: Seconds a process waits for another's write transaction before giving up.
BUSY_TIMEOUT_S = 60.0
#: Before it (Röntgen's discovery) an acquisition date is a wrong clock: no month is kept.
FIRST_PLAUSIBLE_DATE = _dt.date(1895, 11, 8)
#: Dates are moved back by 1 to this many whole days, per patient.
MAX_DATE_SHIFT_DAYS = 3653
DATE_METHOD = (
    "dates shifted back by a keyed per-patient offset of 1-3653 days (DICOM PS3.15 Retain "
    "Longitudinal Temporal Information with Modified Dates Option)"
)
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS procedures (
    id INTEGER PRIMARY KEY,
    report_sha256 TEXT NOT NULL UNIQUE,
    sop_instance_uid TEXT,
    study_instance_uid TEXT,
    pseudonym TEXT,
    device TEXT,
    procedure_type TEXT,
    region TEXT,
    start TEXT,
    us_guided INTEGER NOT NULL,
    dap_total_gy_cm2 REAL,
    ka_r_total_mgy REAL,
    fluoro_time_s REAL,
    n_events INTEGER,
    saved_dap_gy_cm2 REAL,
    source_path TEXT,
    ingested_at TEXT NOT NULL,
    dose_json TEXT NOT NULL,
    month_relative INTEGER,
    month_real TEXT,
    accession_number TEXT,
    study_date TEXT
);
CREATE TABLE IF NOT EXISTS events (
    procedure_id INTEGER NOT NULL REFERENCES procedures(id),
    event_uid TEXT, start TEXT, type TEXT, dap_gy_cm2 REAL, ka_r_mgy REAL,
    duration_s REAL, pulses REAL
);
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT, existing_sha256 TEXT, new_sha256 TEXT, reason TEXT, at TEXT
);
"""

QUANTITIES = ("dap_total_gy_cm2", "ka_r_total_mgy", "fluoro_time_s")
#: Columns added after the first registries: (name, type). ``month_relative`` is the
#: acquisition month moved by the registry-wide shift; the others are patient data, kept
#: only when ingested with ``--include-phi``.
ADDED_COLUMNS = (
    ("month_relative", "INTEGER"),
    ("month_real", "TEXT"),
    ("accession_number", "TEXT"),
    ("study_date", "TEXT"),
)
_COLUMN_WORDS = {
    "month_relative": "relative month",
    "month_real": "calendar month",
    "accession_number": "accession number",
    "study_date": "study date",
}


def _locked(path: Path, exc: sqlite3.Error) -> DoseError | None:
    """The error for a registry another process holds past the busy timeout, else None.

    Locked is not damaged: the file is fine and the same command succeeds later (exit 1).
    """
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return DoseError(
            f"{path}: the registry is locked by another process (waited {BUSY_TIMEOUT_S:g} s); "
            "run the command again when that process has finished"
        )
    return None


def _damaged(method):
    """Say a database error of ``method`` as one line naming the registry (bad input).

    A registry whose header reads but whose pages are damaged (a truncated copy, a disk
    error) fails only when a table is read; that is a bad input file, not a crash.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _locked(self.path, exc) or DoseInputError(
                f"{self.path}: the registry cannot be read or written ({exc}): a damaged "
                "file, or a file or folder without write permission"
            ) from exc

    return wrapper


class Registry:
    """A registry file; created on first use when ``create`` (never over another file)."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        _check_file(self.path, create)
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise DoseInputError(f"{self.path}: cannot open the registry ({exc})") from exc
        try:
            self._open(create)
        except sqlite3.Error as exc:
            self.db.close()
            raise _locked(self.path, exc) or DoseInputError(
                f"{self.path}: not a hybridfuse registry ({exc})"
            ) from exc
        except BaseException:
            self.db.close()
            raise

    def _open(self, create: bool) -> None:
        if not _tables(self.db):
            if not create:
                raise DoseInputError(f"{self.path}: an empty database, not a hybridfuse registry")
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if not _tables(self.db):  # another process may have created it meanwhile
                    # executescript would commit the open transaction: one statement each.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    for key, value in (
                        ("schema", SCHEMA),
                        ("secret", secrets.token_hex(32)),
                        ("dates", DATE_METHOD),
                    ):
                        self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        meta = self._signature()
        if create:
            self._add_columns()
        self.columns = _columns(self.db)
        self.legacy = meta["schema"] == _LEGACY_SCHEMA
        secret = meta.get("secret") or meta.get("salt") or ""
        self._salt = secret
        try:
            self._key = bytes.fromhex(secret)
        except ValueError:
            self._key = b""
        if len(self._key) < 16:
            raise DoseInputError(f"{self.path}: the registry's secret is missing or damaged")

    def _signature(self) -> dict[str, str]:
        """The ``meta`` rows, if this is one of our registries; otherwise refuse."""
        app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
        names = _tables(self.db)
        meta = {}
        if "meta" in names:
            try:
                meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error:
                meta = {}
        ours = (app_id == APPLICATION_ID and meta.get("schema") == SCHEMA) or (
            app_id == 0 and meta.get("schema") == _LEGACY_SCHEMA and "salt" in meta
        )
        if not ours or not {"procedures", "events", "conflicts"} <= names:
            raise DoseInputError(
                f"{self.path}: an SQLite database that is not a hybridfuse registry "
                "(no hybridfuse signature); refused and left unchanged"
            )
        return meta

    def _add_columns(self) -> None:
        """Give an older registry the columns added since (empty for its procedures)."""
        if not {c for c, _ in ADDED_COLUMNS} - _columns(self.db):
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # e.g. a read-only file: say what was being done
            raise _locked(self.path, exc) or DoseInputError(
                f"{self.path}: cannot add the month columns ({exc})"
            ) from exc
        try:
            have = _columns(self.db)  # another process may have added them meanwhile
            for name, kind in ADDED_COLUMNS:
                if name not in have:
                    self.db.execute(f"ALTER TABLE procedures ADD COLUMN {name} {kind}")
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            raise DoseInputError(f"{self.path}: cannot add the month columns ({exc})") from exc
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def pseudonym(self, identifier: str | None) -> str | None:
        """Keyed pseudonym of an identifier (the identifier itself is never stored)."""
        if not identifier:
            return None
        if self.legacy:  # registry/1: keep its pseudonyms comparable with earlier rows
            return hashlib.sha256((self._salt + identifier).encode()).hexdigest()[:16]
        return _keyed(identifier, self._key)

    def uid(self, uid: str | None) -> str | None:
        """A UID as stored: its keyed pseudonym (registry/1 kept UIDs as they were)."""
        return uid if self.legacy else self.pseudonym(uid)

    def date_shift(self, who: str) -> _dt.timedelta:
        """The keyed per-patient shift applied to every date of that patient (PS3.15)."""
        if self.legacy:
            return _dt.timedelta(0)
        mac = hmac.new(self._key, b"date-shift\x00" + who.encode(), hashlib.sha256).digest()
        return _dt.timedelta(days=1 + int.from_bytes(mac[:4], "big") % MAX_DATE_SHIFT_DAYS)

    @_damaged
    def ingest(
        self, report: dict, events, patient_id: str | None = None, phi: dict | None = None
    ) -> dict:
        """Add one report (a ``build_dose_report`` record); returns what happened.

        ``phi`` (``accession_number``, ``study_date``; only with ``--include-phi``) is kept
        with the calendar month. The report is validated first (:func:`validate_report`);
        the check for an earlier copy and the insert are one immediate transaction, so
        concurrent ingests queue.
        """
        validate_report(report, report.get("_source", "report"))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = self._ingest(report, events, patient_id, phi)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return result

    def _when(self, report: dict, events, phi: dict | None) -> tuple[dict, str]:
        """The month columns and (with ``phi``) the study's identifiers of one report.

        Also a note when the acquisition date is implausible (kept as no month, so a wrong
        clock does not stretch the monthly audit over centuries).
        """
        starts = [e.start for e in events if e.start is not None]
        acquired = min(starts).date() if starts else report.get("_study_date")
        note = ""
        latest = _dt.date.today() + _dt.timedelta(days=1)  # a clock a time zone ahead
        if acquired is not None and not FIRST_PLAUSIBLE_DATE <= acquired <= latest:
            note = f"acquisition date {acquired.isoformat()} implausible: no month kept"
            acquired = None
        out = dict.fromkeys(c for c, _ in ADDED_COLUMNS)
        if acquired is not None:
            out["month_relative"] = month_index(acquired) - month_shift(self._key)
        if phi is not None:
            out["month_real"] = f"{acquired:%Y-%m}" if acquired is not None else None
            out["accession_number"] = phi.get("accession_number")
            date = phi.get("study_date")
            out["study_date"] = date.isoformat() if date is not None else None
        return out, note

    def _fill(self, pid: int, values: dict) -> list[str]:
        """Set the added columns an earlier ingest left empty; the names of those set."""
        cur = self.db.execute(
            f"SELECT {', '.join(values)} FROM procedures WHERE id=?", (pid,)
        ).fetchone()
        new = {
            c: v
            for (c, v), old in zip(values.items(), cur, strict=True)
            if old is None and v is not None
        }
        for c, v in new.items():
            self.db.execute(f"UPDATE procedures SET {c}=? WHERE id=?", (v, pid))
        return [_COLUMN_WORDS[c] for c in new]

    def _conflict(self, sop: str | None, sha: str, now: str) -> str | None:
        """Record (and say) a SOP Instance UID already used by a different report."""
        if not sop:
            return None
        same_uid = self.db.execute(
            "SELECT report_sha256 FROM procedures WHERE sop_instance_uid=?", (sop,)
        ).fetchone()
        if not same_uid:
            return None
        reason = (
            "SOP Instance UID reused by a different report (content differs); "
            "stored as a distinct procedure"
        )
        self.db.execute(
            "INSERT INTO conflicts (sop_instance_uid, existing_sha256, new_sha256, "
            "reason, at) VALUES (?,?,?,?,?)",
            (sop, same_uid[0], sha, reason, now),
        )
        return reason

    def _ingest(self, report: dict, events, patient_id: str | None, phi: dict | None) -> dict:
        inp = report["inputs"][0]
        sha = inp["sha256"]
        sop = self.uid(report.get("_sop_uid") or inp.get("sop_instance_uid"))
        when, note = self._when(report, events, phi)
        existing = self.db.execute(
            "SELECT id FROM procedures WHERE report_sha256=?", (sha,)
        ).fetchone()
        if existing:
            out = {"status": "already ingested", "id": existing[0], "sha256": sha}
            filled = self._fill(existing[0], when)
            if filled:  # how an earlier registry, or an ingest without PHI, is completed
                out["status"] += f"; added {', '.join(filled)}"
            out["status"] += f"; {note}" if note else ""
            return out
        result = {"status": f"ingested; {note}" if note else "ingested", "sha256": sha}
        now = _dt.datetime.now().isoformat(timespec="seconds")
        conflict = self._conflict(sop, sha, now)
        if conflict:
            result["conflict"] = conflict
        study = report.get("_study_uid")
        shift = self.date_shift(patient_id or study or sha)

        def shifted(t):
            if t is None:
                return None
            try:
                return (t - shift).isoformat()
            except OverflowError as exc:  # a date in the first years AD: a wrong clock
                raise DoseInputError(
                    f"{report.get('_source', 'report')}: the date {t.date().isoformat()} is "
                    f"too early to be stored shifted back by up to {MAX_DATE_SHIFT_DAYS} days"
                ) from exc

        d = report["delivered"]
        cf = (report.get("saved") or {}).get("counterfactual")
        starts = [e.start for e in events if e.start is not None]
        cur = self.db.execute(
            "INSERT INTO procedures (report_sha256, sop_instance_uid, study_instance_uid, "
            "pseudonym, device, procedure_type, region, start, us_guided, dap_total_gy_cm2, "
            "ka_r_total_mgy, fluoro_time_s, n_events, saved_dap_gy_cm2, source_path, "
            "ingested_at, dose_json, month_relative, month_real, accession_number, study_date) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                sha,
                sop,
                self.uid(study),
                self.pseudonym(patient_id),
                " ".join(v for v in report["device"].values() if v),
                report.get("procedure"),
                report.get("region"),
                shifted(min(starts)) if starts else None,
                int(cf is not None),
                d.get("dap_total_gy_cm2"),
                d.get("ka_r_total_mgy"),
                d.get("fluoro_time_s"),
                d.get("n_events"),
                (cf.get("point") or {}).get("dap_gy_cm2") if cf else None,
                _source_name(inp, keep_name=phi is not None),
                now,
                _stored_record(report, self.uid, keep_names=phi is not None),
                *(when[c] for c, _ in ADDED_COLUMNS),
            ),
        )
        pid = cur.lastrowid
        self.db.executemany(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    pid,
                    self.uid(e.uid),
                    shifted(e.start),
                    e.event_type,
                    _finite_or_none(e.dap_gy_cm2),
                    _finite_or_none(e.dose_rp_mgy),
                    _finite_or_none(e.duration_s),
                    _finite_or_none(e.number_of_pulses),
                )
                for e in events
            ],
        )
        result["id"] = pid
        return result

    @_damaged
    def baseline_values(self, procedure_type: str) -> dict[str, list[float]]:
        """Values of fluoroscopy-only procedures of one type, for the baseline method."""
        rows = self.db.execute(
            "SELECT dap_total_gy_cm2, ka_r_total_mgy, fluoro_time_s FROM procedures "
            "WHERE procedure_type=? AND us_guided=0",
            (procedure_type,),
        ).fetchall()
        out: dict[str, list[float]] = {"dap_gy_cm2": [], "ka_r_mgy": [], "fluoro_time_s": []}
        for dap, kar, ft in rows:
            for key, raw in (("dap_gy_cm2", dap), ("ka_r_mgy", kar), ("fluoro_time_s", ft)):
                v = _finite_or_none(raw)
                if v is not None and _valid_amount(v, key):
                    out[key].append(v)
        return out

    @_damaged
    def rows(self) -> list[dict]:
        """Every procedure as a dict (no stored report text).

        The added columns are None in a registry that predates them (see ``missing``).
        """
        added = [c for c, _ in ADDED_COLUMNS if c in self.columns]
        cur = self.db.execute(
            "SELECT id, pseudonym, device, procedure_type, region, start, us_guided, "
            "dap_total_gy_cm2, ka_r_total_mgy, fluoro_time_s, saved_dap_gy_cm2"
            + "".join(f", {c}" for c in added)
            + " FROM procedures ORDER BY id"
        )
        names = [c[0] for c in cur.description]
        out = []
        for r in cur.fetchall():
            row = dict.fromkeys(c for c, _ in ADDED_COLUMNS)
            row.update(zip(names, r, strict=True))
            # A value that is not a finite number (an older registry accepted "abc",
            # NaN, inf) is unknown, and said so, rather than breaking the audit.
            row["invalid"] = [
                q for q in (*QUANTITIES, "saved_dap_gy_cm2") if not _valid_amount(row[q], q)
            ]
            for q in row["invalid"]:
                row[q] = None
            out.append(row)
        return out

    def missing(self, columns) -> str | None:
        """Why the registry cannot give ``columns`` (it predates them), or None."""
        absent = [c for c in columns if c not in self.columns]
        if not absent:
            return None
        return (
            f"{self.path.name} predates the column(s) {', '.join(absent)} (a registry from "
            "an earlier hybridfuse); the next dose ingest adds them, and ingesting the same "
            "reports again fills them in"
        )

    @_damaged
    def conflicts(self) -> list[dict]:
        """Recorded UID conflicts."""
        cur = self.db.execute(
            "SELECT sop_instance_uid, existing_sha256, new_sha256, reason, "
            "at FROM conflicts ORDER BY id"
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _check_file(path: Path, create: bool) -> None:
    """Refuse, before SQLite touches it, a path that is no SQLite database."""
    if path.is_dir():
        raise DoseInputError(f"{path}: is a folder, not a registry file")
    if not path.exists():
        if not create:
            raise DoseInputError(f"{path}: no such registry")
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise DoseInputError(f"{path}: cannot read the registry ({exc.strerror})") from exc
    if head and head != _SQLITE_MAGIC:
        raise DoseInputError(f"{path}: not an SQLite file, so not a hybridfuse registry")


def _columns(db: sqlite3.Connection) -> set[str]:
    return {r[1] for r in db.execute("PRAGMA table_info(procedures)")}


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _valid_amount(v, key: str = "dap") -> bool:
    """None, or a finite number from 0 to the plausible bound of ``key``'s quantity."""
    return v is None or (_is_number(v) and math.isfinite(v) and 0 <= v <= upper_bound(key))


def _finite_or_none(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _source_name(inp: dict, *, keep_name: bool) -> str:
    """The ``source_path`` column: the input's label; its file name only with PHI kept."""
    from .inputs import input_label

    name = inp.get("file") or Path(str(inp.get("path") or "")).name
    if keep_name and name:
        return name
    return inp.get("input") or input_label(inp["sha256"], "input", 1)


def _stored_record(report: dict, pseudonym, *, keep_names: bool = False) -> str:
    """The dose.json kept in the registry: no patient block, no paths, UIDs pseudonymised.

    Input files by their labels, file names only with ``keep_names`` (``--include-phi``):
    a dose.json written with --include-phi names them in its flags too.
    """
    from .inputs import drop_names, drop_paths
    from .report import finite_json

    record = {k: v for k, v in report.items() if not k.startswith("_") and k != "patient"}
    record = drop_paths(record) if keep_names else drop_names(record)
    if isinstance(record.get("flags"), list):
        record["flags"] = [_event_named(f, pseudonym) for f in record["flags"]]
    record["inputs"] = [
        {
            **{k: v for k, v in i.items() if k != "sop_instance_uid"},
            "sop_instance_uid": pseudonym(i.get("sop_instance_uid")),
        }
        for i in record.get("inputs") or []
    ]
    return finite_json(record, indent=None)


#: How an RDSR's flag names an irradiation event (:mod:`.rdsr`): ``event <UID>: ...``.
#: Any text for the UID (an SR may hold a malformed one); not a pseudonym ``event-…``.
_EVENT_FLAG = re.compile(r"^event (?!event-)(.+?)(?=: \w+ recorded \d+ times; first kept$)")


def _event_named(flag, pseudonym):
    """``flag`` naming its event by pseudonym, as the events table does.

    A dose.json written with --include-phi, or before session 16, names it by its UID.
    """
    if not isinstance(flag, str):
        return flag
    return _EVENT_FLAG.sub(lambda m: f"event {pseudonym(m.group(1))}", flag)


#: Numbers of a dose record that are physical amounts (finite, >= 0, or null).
_NONNEGATIVE = DELIVERED_KEYS
_COUNTS = ("n_events", "n_fluoro_events", "n_acquisition_events", "n_planes", "n_images")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _need(ok: bool, source, where: str, what: str, value) -> None:
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DoseInputError(f"{source}: field {where} = {shown}: {what}")


def validate_report(report: dict, source="report") -> None:
    """Check every field the registry stores: types, finite numbers, amounts >= 0.

    Raises
    ------
    DoseInputError
        Naming ``source`` (the file) and the field, e.g. ``delivered.dap_total_gy_cm2``.
    """
    _need(isinstance(report, dict), source, "$", "must be a JSON object", type(report).__name__)
    inputs = report.get("inputs")
    _need(isinstance(inputs, list) and inputs, source, "inputs", "must be a non-empty list", inputs)
    first = inputs[0]
    _need(isinstance(first, dict), source, "inputs[0]", "must be an object", first)
    sha = first.get("sha256")
    _need(
        isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
        source,
        "inputs[0].sha256",
        "must be 64 lower-case hex digits",
        sha,
    )
    for key in ("input", "file", "path", "sop_instance_uid"):
        v = first.get(key)
        _need(v is None or isinstance(v, str), source, f"inputs[0].{key}", "must be text", v)
    for key in ("procedure", "region"):
        v = report.get(key)
        _need(v is None or isinstance(v, str), source, key, "must be text or null", v)
    device = report.get("device")
    _need(isinstance(device, dict), source, "device", "must be an object", device)
    for key, v in device.items():
        _need(v is None or isinstance(v, str), source, f"device.{key}", "must be text", v)
    d = report.get("delivered")
    _need(isinstance(d, dict), source, "delivered", "must be an object", d)
    for key in _NONNEGATIVE:
        v = d.get(key)
        where = f"delivered.{key}"
        _need(v is None or _is_number(v), source, where, "must be a number or null", v)
        _need(v is None or math.isfinite(v), source, where, "must be finite", v)
        _need(v is None or v >= 0, source, where, "must not be negative", v)
        top = upper_bound(key)
        _need(v is None or v <= top, source, where, f"exceeds the plausible {top:g}", v)
    for key in _COUNTS:
        v = d.get(key)
        ok = v is None or (_is_number(v) and math.isfinite(v) and v >= 0 and v == int(v))
        _need(ok, source, f"delivered.{key}", "must be a whole number >= 0 or null", v)
    saved = report.get("saved")
    _need(saved is None or isinstance(saved, dict), source, "saved", "must be an object", saved)
    cf = (saved or {}).get("counterfactual")
    _need(cf is None or isinstance(cf, dict), source, "saved.counterfactual", "not an object", cf)
    point = (cf or {}).get("point")
    _need(point is None or isinstance(point, dict), source, "counterfactual.point", "", point)
    v = (point or {}).get("dap_gy_cm2")
    where = "saved.counterfactual.point.dap_gy_cm2"
    ok = v is None or (_is_number(v) and math.isfinite(v) and 0 <= v <= PLAUSIBLE_MAX["dap"])
    _need(ok, source, where, f"must be a number from 0 to {PLAUSIBLE_MAX['dap']:g} or null", v)


def upper_bound(key: str) -> float:
    """Plausible upper bound of a stored amount (see :data:`dose.units.PLAUSIBLE_MAX`)."""
    if "dap" in key:
        return PLAUSIBLE_MAX["dap"]
    if key.endswith("_s"):
        return PLAUSIBLE_MAX["time"]
    return PLAUSIBLE_MAX["dose"]
