"""One case end to end: read → register → fuse → dose, into one folder.

The case folder is built under a temporary name and renamed when complete; its
``summary.json`` records the hash of every input and of the configuration, so a batch
re-run can tell a finished, unchanged case from one to redo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridfuse import __version__
from hybridfuse._options import OptionError, build, check_consistent, flat, specs
from hybridfuse._safeio import (
    OWNER_MARK,
    UnsafeOutputError,
    atomic_directory,
    check_out_separate,
    check_out_target,
    file_record,
    html_text,
    recorded_name,
    settings_file_problem,
    sha256_file,
)
from hybridfuse.dicom import is_dicom_stream, quiet_pydicom
from hybridfuse.dose.options import DoseOptions
from hybridfuse.registration import RegistrationError, RegistrationOptions

from .errors import FusionError, InputError
from .options import FusionOptions
from .pair import PairOptions
from .us_pairing import PAIRING_LIMIT_S, pair_runs

__all__ = [
    "CaseSpec",
    "RunConfig",
    "anonymous_case_id",
    "case_from_folder",
    "check_out",
    "claim_out",
    "input_hash",
    "is_output_folder",
    "run_case",
    "unpaired_runs",
    "SUMMARY_SCHEMA",
]

SUMMARY_SCHEMA = "hybridfuse.case/2"


@dataclass(frozen=True)
class CaseSpec:
    """The input files of one case (paths as given; absolute or relative to the cwd)."""

    case_id: str
    fluoro: tuple[str, ...]
    ultrasound: tuple[str, ...]
    rdsr: str | None = None
    landmarks: str | None = None
    truth: str | None = None
    landmark_dir: str | None = None  # synthetic cases: one CSV per frame pair

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaseSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["fluoro"] = tuple(d["fluoro"])
        d["ultrasound"] = tuple(d["ultrasound"])
        return cls(**d)

    def files(self) -> list[str]:
        """Every input file."""
        out = [*self.fluoro, *self.ultrasound]
        out += [p for p in (self.rdsr, self.landmarks, self.truth) if p]
        return out

    def inputs(self) -> list[str]:
        """Every input file and folder: what an output folder may never equal or contain."""
        return self.files() + ([self.landmark_dir] if self.landmark_dir else [])


@dataclass(frozen=True)
class RunConfig:
    """Every option of ``hybridfuse run`` and ``batch``, one group per stage.

    Also read from a TOML file (:meth:`from_toml`) with ``[registration]``, ``[fusion]``
    ``[dose]`` and ``[pair]`` tables whose keys are the options' flat names.
    """

    registration: RegistrationOptions = field(default_factory=RegistrationOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)
    dose: DoseOptions = field(default_factory=DoseOptions)
    pair: PairOptions = field(default_factory=PairOptions)

    def to_dict(self) -> dict:
        """JSON-ready ``{group: {flat name: value}}`` (what summary.json records)."""
        return {name: flat(getattr(self, name)) for name in GROUPS}

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "configuration") -> RunConfig:
        """Inverse of :meth:`to_dict` (each group's values checked like a TOML table's)."""
        return cls().with_tables(data, source=source)

    def with_tables(
        self, tables: Mapping, *, source: str = "options", consistent: bool = True
    ) -> RunConfig:
        """A copy with ``{group: {flat name: value}}`` set; unknown groups or names refused.

        With ``consistent``, the result's options may not contradict each other either
        (:meth:`check`); a caller that still adds values checks once at the end.
        """
        unknown = sorted(set(tables) - set(GROUPS))
        if unknown:
            raise OptionError(
                f"{source}: unknown table(s) {', '.join(f'[{t}]' for t in unknown)}; "
                f"use {', '.join(f'[{g}]' for g in GROUPS)}"
            )
        changes = {}
        for name, values in tables.items():
            if not isinstance(values, Mapping):
                raise OptionError(f"{source}: {name} = {values!r} must be a table ([{name}])")
            group = GROUPS[name]
            changes[name] = build(
                group, values, base=getattr(self, name), source=source, consistent=False
            )
        config = dataclasses.replace(self, **changes)
        if consistent:
            config.check(source)
        return config

    def check(self, source: str = "options") -> None:
        """Refuse options of a group that are each valid but contradict each other."""
        for name in GROUPS:
            check_consistent(getattr(self, name), source)

    def check_effective(self) -> None:
        """Refuse registration options that a run would record but not use.

        A run registers every pair from its landmarks, so the scale check (intensity-only)
        and, without ``search = true``, the search settings would do nothing.
        """
        unused = self.registration.unused_by(with_landmarks=True)
        if unused:
            raise InputError(
                f"{', '.join(unused)}: no effect in run and batch, which register every pair "
                "from its landmarks (the search settings need --search; the scale check "
                "applies to register without --landmarks)"
            )

    def with_values(
        self, values: Mapping, *, source: str = "options", consistent: bool = True
    ) -> RunConfig:
        """A copy with flat ``{name: value}`` set, each in the group that defines it."""
        owner = {s.name: g for g, c in GROUPS.items() for s in specs(c)}
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise OptionError(f"{source}: unknown option(s) {', '.join(map(repr, unknown))}")
        tables: dict[str, dict] = {}
        for name, value in values.items():
            tables.setdefault(owner[name], {})[name] = value
        return self.with_tables(tables, source=source, consistent=consistent)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, overrides: Mapping | None = None) -> RunConfig:
        """The file's tables (``[registration]``, ``[fusion]``, ...), then ``overrides``.

        ``overrides`` are flat ``{name: value}`` (the command line's options) and win over
        the file. A bad file, an unknown table or key, or a bad value raises
        :class:`InputError` naming the file and the key, before any work.
        """
        path = Path(path)
        try:
            config = cls().with_tables(read_toml_tables(path), source=str(path), consistent=False)
            config = config.with_values(overrides or {}, source="command line", consistent=False)
            # Checked once both are in: the command line may complete what the file began.
            config.check(f"{path} with the command line" if overrides else str(path))
            return config
        except OptionError as exc:
            raise InputError(str(exc)) from exc


#: The option groups of a run, by TOML table name.
GROUPS = {
    "registration": RegistrationOptions,
    "fusion": FusionOptions,
    "dose": DoseOptions,
    "pair": PairOptions,
}


def read_toml_tables(path: str | os.PathLike) -> dict[str, dict]:
    """The tables of a TOML configuration; ``"none"``/``"auto"`` of optional keys as None.

    TOML has no null, so an option that may be empty takes the words the command line
    uses. The old ``[run]`` table and keys outside a table are refused, saying the fix.
    """
    import tomllib

    path = Path(path)
    try:
        problem = settings_file_problem(path)
        if problem:
            raise InputError(f"{path}: {problem}")
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # editors may add a BOM
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a readable TOML configuration (not UTF-8)") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a readable TOML configuration ({exc})") from exc
    tables_named = ", ".join(f"[{g}]" for g in GROUPS)
    for name, values in data.items():
        if name not in GROUPS:
            raise InputError(
                f"{path}: {name!r} is not a table of hybridfuse: options go in the tables "
                f"{tables_named}, by name (the old [run] table is gone)"
            )
        if not isinstance(values, dict):
            raise InputError(f"{path}: {name} = {values!r} must be a table ([{name}])")
    tables = {}
    for name, values in data.items():
        optional = {s.name for s in specs(GROUPS[name]) if s.optional}
        tables[name] = {
            k: None if k in optional and _is_none_word(v) else v for k, v in values.items()
        }
    return tables


def _is_none_word(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "auto")


def input_hash(spec: CaseSpec, config: RunConfig, file_hashes: dict | None = None) -> str:
    """Hash of every input's content, the configuration and the software version.

    ``file_hashes`` (path → sha256 of :meth:`CaseSpec.files`) avoids reading the files
    again when the caller already hashed them.
    """
    h = hashlib.sha256()
    for path in spec.files():
        h.update((file_hashes[path] if file_hashes else sha256_file(path)).encode())
    if spec.landmark_dir and Path(spec.landmark_dir).is_dir():
        for p in sorted(Path(spec.landmark_dir).glob("*.csv")):
            if p.is_file():  # a FIFO would block; _check_inputs refuses it
                h.update(sha256_file(p).encode())
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    if config.dose.corrections:  # its content, not only its name, decides the outputs
        h.update(sha256_file(config.dose.corrections).encode())
    h.update(__version__.encode())
    return h.hexdigest()


def input_records(spec: CaseSpec, file_hashes: dict, *, include_phi: bool) -> dict:
    """Each input file's record (path -> :func:`hybridfuse._safeio.file_record`).

    Labelled by its role in the case: ``fluoroscopy 2 (sha256 <12 hex>)``, ``RDSR (...)``.
    """
    roles = [("fluoroscopy", n, p) for n, p in enumerate(spec.fluoro, 1)]
    roles += [("ultrasound", n, p) for n, p in enumerate(spec.ultrasound, 1)]
    single = (("RDSR", spec.rdsr), ("landmarks", spec.landmarks), ("truth", spec.truth))
    roles += [(role, None, p) for role, p in single if p]
    return {
        p: file_record(p, include_phi=include_phi, sha256=file_hashes[p], role=role, position=n)
        for role, n, p in roles
    }


def dose_files(config: RunConfig) -> list[str]:
    """Files the dose options name (the corrections): an output folder may not hold them."""
    return [config.dose.corrections] if config.dose.corrections else []


def dose_corrections(config: RunConfig):
    """The dose step's per-unit corrections, read and checked (None when not given)."""
    if not config.dose.corrections:
        return None
    from hybridfuse.dose.corrections import load_corrections

    return load_corrections(config.dose.corrections)


def is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the results of ``run`` or ``batch`` (not a case's inputs).

    Synthetic cases carry the owner marker too; results also hold their summary.
    """
    return (folder / OWNER_MARK).is_file() and any(
        (folder / name).is_file() for name in ("summary.json", "batch_summary.csv")
    )


def case_from_folder(folder: str | os.PathLike, case_id: str | None = None) -> CaseSpec:
    """Find the inputs of a case folder by what each DICOM file is (not by its name).

    X-ray angiographic/fluoroscopic images are fluoroscopy runs, ultrasound images the
    clips, a dose SR the RDSR; ``truth.json`` and ``landmarks/`` (as ``hybridfuse synth``
    writes them) or a single ``*.csv`` of landmarks are used when present.
    """
    from .io import is_dicom_file, read_header

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    if is_output_folder(folder):
        raise InputError(f"{folder}: an output folder of hybridfuse, not a case folder")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror})") from exc
    listed = {p.resolve() for p in entries}
    entries += sorted(p for p in _file_set_members(folder) if p.resolve() not in listed)
    fluoro, us, rdsr, radiographs = [], [], [], []
    for p in entries:
        try:
            dicom_like = is_dicom_file(p) or is_dicom_stream(p) or p.suffix.lower() == ".dcm"
            if not p.is_file() or not dicom_like:
                continue
            hdr = read_header(p)
        except (InputError, OSError):
            continue  # reported when the case runs: a listed file that cannot be read
        if hdr["is_sr"]:
            rdsr.append((str(p), hdr))
        elif hdr["modality"] == "US":
            us.append(str(p))
        elif hdr["modality"] in ("XA", "RF"):
            fluoro.append(str(p))
        elif hdr["modality"] in ("DX", "CR") and hdr["is_image"]:
            radiographs.append(str(p))
    csvs = sorted(folder.glob("*.csv"))
    return CaseSpec(
        case_id=case_id or folder.resolve().name,
        # A C-arm may store its images as DX: taken when no XA/RF image is there.
        fluoro=tuple(fluoro or radiographs),
        ultrasound=tuple(us),
        rdsr=_dose_report(folder, rdsr),
        landmarks=str(csvs[0]) if len(csvs) == 1 else None,
        truth=str(folder / "truth.json") if (folder / "truth.json").is_file() else None,
        landmark_dir=str(folder / "landmarks") if (folder / "landmarks").is_dir() else None,
    )


#: Most files a case folder's DICOMDIR may list (a case holds a handful; a whole
#: archive export is not a case).
MAX_FILE_SET_MEMBERS = 2000
#: Largest DICOMDIR read (about 1 KiB a record).
MAX_FILE_SET_INDEX_BYTES = 16 * 2**20


def _file_set_members(folder: Path) -> list[Path]:
    """The files a DICOMDIR in ``folder`` lists (media exports keep them in PT*/ST*/SE*/).

    Only regular files inside ``folder`` are returned; a DICOMDIR that cannot be read, or
    a reference that leaves the folder, adds nothing (the folder's own files still count).
    """
    from .io import _dcmread

    index = folder / "DICOMDIR"
    if not index.is_file() or index.stat().st_size > MAX_FILE_SET_INDEX_BYTES:
        return []
    try:
        with quiet_pydicom():
            ds = _dcmread(index, stop_before_pixels=True)
        records = list(ds.get("DirectoryRecordSequence") or [])
    except Exception:  # noqa: BLE001 - an unreadable index leaves the folder's own files
        return []
    root = folder.resolve()
    members = []
    for record in records[:MAX_FILE_SET_MEMBERS]:
        parts = record.get("ReferencedFileID")
        if not parts:
            continue
        parts = [parts] if isinstance(parts, str) else list(parts)
        path = folder.joinpath(*(str(p) for p in parts))
        try:
            inside = path.resolve().is_relative_to(root) and path.is_file()
        except OSError:
            continue
        if inside and not path.is_symlink():
            members.append(path)
    return members


_RDSR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
_KEY_OBJECT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document


def _dose_report(folder: Path, found: list[tuple[str, dict]]) -> str | None:
    """The case's dose report among its SR-family files (path and header of each).

    An archive exports a study with its Key Object Selection ("key images") and the
    scanner's measurement SRs: not dose reports, yet the first SR by name was taken and
    the run failed on it. A dose report is one of the dose SR class or declaring TID 10001;
    without one, an SR declaring no template (a vendor's summary, read leniently) but not a
    key object selection; an SR declaring another template (a measurement report) never is,
    so the dose then comes from the image tags.
    Two different dose reports are refused: reading one dropped the other's dose silently.
    """
    dose = [
        (p, h)
        for p, h in found
        if h["sop_class_uid"] == _RDSR_SOP_CLASS or h["template"] == "10001"
    ]
    if not dose:
        dose = [
            (p, h)
            for p, h in found
            if h["template"] is None and h["sop_class_uid"] != _KEY_OBJECT_SOP_CLASS
        ]
    instances = {}
    for p, h in dose:  # the same report sent twice is one report
        instances.setdefault(h.get("sop_instance_uid") or p, p)
    if len(instances) > 1:  # counted, not named: a batch's summary keeps this message
        raise InputError(
            f"{folder}: {len(instances)} different dose reports (SOP Instance UIDs differ); a "
            "run reads one, so the dose of the others would be missing: give the case as a "
            "manifest naming its RDSR, or keep one in the folder"
        )
    return next(iter(instances.values()), None)


def anonymous_case_id(spec: CaseSpec) -> str:
    """What ``run`` calls a case without ``--include-phi``: not its folder's name.

    A folder named after the patient (``SMITH_JOHN_20261130``) would otherwise name the
    case in summary.json and index.html. The keyed pseudonym of its study
    (``CASE-<10 hex>``, as ``fuse.json``'s ``case`` and the fused DICOM's label): stable
    for one key, unlinkable without it.
    """
    import pydicom

    from .dicom_out import case_pseudonym

    first = next(iter([*spec.fluoro, *spec.ultrasound]), None)
    study = None
    try:
        ds = pydicom.dcmread(
            first,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID"],
            force=is_dicom_stream(first),
        )
        study = str(ds.get("StudyInstanceUID", "")) or None
    except Exception:  # no file, or an unreadable one: refused, naming it, when the case runs
        pass
    return case_pseudonym(study)


def _check_inputs(spec: CaseSpec) -> None:
    if not spec.fluoro:
        raise InputError(f"case {spec.case_id}: no fluoroscopy file")
    if not spec.ultrasound:
        raise InputError(f"case {spec.case_id}: no ultrasound file")
    for p in spec.files():
        if Path(p).is_dir():
            raise InputError(f"case {spec.case_id}: {p}: a folder, not a file")
        if not Path(p).is_file():
            if "\0" not in p and os.path.exists(p):  # a FIFO, a device, ...
                raise InputError(f"case {spec.case_id}: {p}: not a regular file")
            raise InputError(f"case {spec.case_id}: {p}: no such file")
    if spec.landmark_dir and Path(spec.landmark_dir).is_dir():
        for p in sorted(Path(spec.landmark_dir).glob("*.csv")):
            if not p.is_file():  # a FIFO here hung the run (hashing it never ended)
                raise InputError(f"case {spec.case_id}: {p}: not a regular file")


def check_out(out_dir: str | os.PathLike, inputs, *, overwrite: bool) -> None:
    """Refuse an output folder before any work: a bad ``--out`` must cost nothing.

    It must name a folder (not ``.`` or ``..``) in a writable place, may not be a link or
    a file, may not equal or contain any of ``inputs``, and when not empty must be one
    hybridfuse wrote (and ``overwrite`` given). Raises
    :class:`hybridfuse._safeio.UnsafeOutputError` or :class:`FileExistsError` (exit 2).
    """
    out_dir = Path(out_dir)
    if out_dir.name in ("", ".", ".."):
        raise UnsafeOutputError(f"--out {out_dir}: name the output folder itself, not . or ..")
    try:
        check_out_separate(out_dir, inputs)
        check_out_target(out_dir, overwrite)
        _check_writable(out_dir)
    except OSError as exc:  # a name too long, a folder that cannot be listed, ...
        if isinstance(exc, FileExistsError):
            raise
        why = exc.strerror or type(exc).__name__
        raise UnsafeOutputError(f"--out {out_dir}: unusable ({why})") from exc


@contextmanager
def claim_out(out_dir: str | os.PathLike, *, overwrite: bool, **kw):
    """:func:`hybridfuse._safeio.atomic_directory`, saying so when another run took ``out_dir``.

    Two runs into the same new folder: the second to finish finds it there and replaces
    nothing; its message says why instead of "cannot write (FileExistsError)". Other
    keywords go to ``atomic_directory``.
    """
    out_dir = Path(out_dir)
    was_there = os.path.lexists(out_dir)
    try:
        with atomic_directory(out_dir, overwrite=overwrite, **kw) as tmp:
            yield tmp
    except (UnsafeOutputError, FileExistsError) as exc:
        if was_there or not os.path.lexists(out_dir) or _empty_dir(out_dir):
            raise
        raise UnsafeOutputError(
            f"{out_dir}: appeared while this run worked (another run?); not replaced"
        ) from exc


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _check_writable(out_dir: Path) -> None:
    parent = Path(os.path.abspath(out_dir)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UnsafeOutputError(f"--out {out_dir}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnsafeOutputError(
            f"--out {out_dir}: cannot write into {parent} (read-only or permission denied)"
        )


def _hash_input(spec: CaseSpec, path: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise InputError(f"case {spec.case_id}: {path}: cannot read ({exc.strerror})") from exc


def run_case(
    spec: CaseSpec,
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Run one case into ``out_dir``; returns the summary (also ``summary.json``).

    ``out_dir`` is checked before any work: it may not be a link or a file, equal or
    contain an input, or (even with ``overwrite``) be a non-empty folder hybridfuse did
    not write. Input files are recorded by label and sha256 (``fluoroscopy 2 (sha256
    <12 hex>)``), their names and paths only with ``config.fusion.include_phi``: file and
    folder names often carry a patient's name.
    """
    from hybridfuse.dose.report import (
        build_dose_report,
        build_image_dose_report,
        write_dose_outputs,
    )

    from .coregister import (
        read_truth_json,
        transform_record,
        truth_tre,
        write_transform_json,
    )
    from .fuse import fuse_images

    config = config or RunConfig()
    out_dir = Path(out_dir)
    check_out(out_dir, [*spec.inputs(), *dose_files(config)], overwrite=overwrite)
    say = progress or (lambda _m: None)
    _check_inputs(spec)
    corrections = dose_corrections(config)  # a bad file is refused before the work
    if corrections is not None and not spec.rdsr:
        # As in `dose report`: corrections are matched on the RDSR's unit; the image-tag
        # report names no unit, so they would silently apply to nothing.
        raise InputError(
            f"{spec.case_id}: --corrections needs a dose SR (RDSR) in the case "
            "(it is matched on the RDSR's unit); none was found"
        )
    # A bad truth.json is refused before the work, one line naming it (not a traceback).
    truth = read_truth_json(spec.truth) if spec.truth else None
    file_hashes = {p: _hash_input(spec, p) for p in spec.files()}  # read each input once
    digest = input_hash(spec, config, file_hashes)
    records = input_records(spec, file_hashes, include_phi=config.fusion.include_phi)
    timings: dict[str, float] = {}
    with claim_out(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        say("reading images")
        fluoro, pairing, belonging = _read_pair(spec, config, records)
        timings["io_s"] = time.perf_counter() - t

        say("registering")
        t = time.perf_counter()
        # (file name for the terminal, the name recorded for summary.json) of each run.
        names = [(Path(p).name, recorded_name(records[p])) for p in spec.fluoro]
        reg, skipped = _register_first_run(spec, config, fluoro, pairing, names)
        fl, us, fi, uj, result, landmarks, fl_name = reg
        run_index = next(i for i, f in enumerate(fluoro) if f is fl)
        pair_record = belonging[run_index]  # the first records are the runs', in order
        tre = None
        if truth is not None:
            try:
                tre = truth_tre(result.transform, truth, fl, us, fl.source_path, fi, uj)
            except InputError as exc:
                raise InputError(f"{spec.truth}: {exc}") from exc
        (tmp / "registration").mkdir()
        record = transform_record(
            result,
            fl,
            us,
            fixed_frame=fi,
            moving_frame=uj,
            tre=tre,
            include_phi=config.fusion.include_phi,
            sha256=file_hashes,
            belonging=pair_record,
        )
        write_transform_json(tmp / "registration" / "transform.json", record)
        timings["registration_s"] = time.perf_counter() - t

        say("fusing")
        t = time.perf_counter()
        lms = []
        if landmarks is not None:
            lms = [
                {
                    "name": n,
                    "x": float(x),
                    "y": float(y),
                    "moving_x": float(u),
                    "moving_y": float(v),
                }
                for n, (x, y), (u, v) in zip(
                    landmarks.names, landmarks.fixed_xy, landmarks.moving_xy, strict=True
                )
            ]
        fusion = fuse_images(
            fl,
            us,
            result.transform,
            tmp / "fusion",
            mode=config.fusion.mode,
            opacity=config.fusion.opacity,
            colormap=config.fusion.colormap,
            order=config.fusion.interpolation,
            video=config.fusion.video,
            dicom=config.fusion.dicom,
            include_phi=config.fusion.include_phi,
            uid_map=config.fusion.uid_map,
            transform_frames=(fi, uj),
            landmarks=lms,
            belonging=pair_record,
            quality=record.get("quality"),
        )
        timings["fusion_s"] = time.perf_counter() - t

        say("dose")
        t = time.perf_counter()
        procedure, region = config.dose.procedure, config.dose.region
        if truth is not None:  # each one not given comes from the synthetic case's truth
            procedure = procedure if procedure is not None else _truth_text(truth, "procedure")
            region = region if region is not None else _truth_text(truth, "region")
        if spec.rdsr:
            dose = build_dose_report(
                spec.rdsr,
                include_phi=config.fusion.include_phi,
                procedure=procedure,
                region=region,
                us_clips=list(spec.ultrasound),
                seed=config.dose.seed,
                force=config.dose.force,
            )
        else:
            dose = build_image_dose_report(
                spec.fluoro,
                include_phi=config.fusion.include_phi,
                procedure=procedure,
                region=region,
            )
        if corrections is not None:
            from hybridfuse.dose.corrections import apply_corrections

            dose["corrections"] = apply_corrections(dose, corrections, config.dose.corrections)
        write_dose_outputs(dose, tmp / "dose")
        timings["dose_s"] = time.perf_counter() - t

        cf = (dose.get("saved") or {}).get("counterfactual")
        summary = {
            "schema": SUMMARY_SCHEMA,
            "case_id": spec.case_id,
            "status": "ok",
            "software_version": __version__,
            "input_hash": digest,
            "config": config.to_dict(),
            "inputs": list(records.values()),
            "registration": {
                # The run's label, or its file name when kept (as ``inputs`` has it).
                "fluoroscopy": fl_name,
                "fixed_frame": fi,
                "moving_frame": uj,
                "model": result.model,
                "metric": result.metric,
                "wall_time_s": result.wall_time_s,
                "landmark_fre_px": result.landmark_fit.fre_px if result.landmark_fit else None,
                "quality": result.quality.to_dict(),
                "tre": tre,
                "runs_not_used": [f"{n[1]}: {why}" for n, why in skipped],
            },
            "fusion": {
                "frames": len(fusion["pairs"]),
                "outputs": fusion["outputs"],
                "frames_per_second": fusion["frames_per_second"],
            },
            "dose": {
                "dap_total_gy_cm2": dose["delivered"]["dap_total_gy_cm2"],
                "saved_dap_gy_cm2": cf["point"].get("dap_gy_cm2") if cf else None,
                "saved_dap_interval_95": cf["interval_95"].get("dap_gy_cm2") if cf else None,
                "flags": dose["flags"],
            },
            "belonging": belonging,
            "timings_s": timings,
        }
        if len(spec.ultrasound) > 1:  # which clip each run got (one clip: that one)
            _record_pairing(summary, spec, records, pairing, pairing[run_index].ultrasound)
        (tmp / "index.html").write_text(_index_html(summary), encoding="utf-8")
        summary["outputs"] = sorted(
            str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()
        ) + ["summary.json"]
        with open(tmp / "summary.json", "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1, default=_json_default)
    return summary


def _record_pairing(summary: dict, spec: CaseSpec, records: dict, pairing, used: str) -> None:
    """Add to ``summary`` each run's ultrasound file and the one registered with the run.

    Recorded for cases with several ultrasound files, by the labels ``inputs`` gives them.
    """
    summary["registration"]["ultrasound"] = recorded_name(records[used])
    summary["ultrasound_pairing"] = [
        {
            "fluoroscopy": recorded_name(records[path]),
            **pair.to_dict(recorded_name(records[pair.ultrasound]) if pair.ultrasound else None),
        }
        for path, pair in zip(spec.fluoro, pairing, strict=True)
    ]


def _register_first_run(spec: CaseSpec, config: RunConfig, fluoro, pairing, names):
    """The first run that registers with its own ultrasound file, and the runs passed over.

    Returns ``(run, ultrasound, fixed frame, moving frame, result, landmarks, recorded
    name)`` and ``[(names, why)]``; raises naming every run tried when none registers.
    Each ultrasound file is read whole once, when a run is tried with it.
    """
    from .coregister import check_landmarks_imaged, read_landmarks_csv, register_images
    from .fuse import pair_frames
    from .io import read_image
    from .pair import with_given_spacing

    skipped, refused, without_landmarks, read = [], False, False, {}
    for fl, name, pair in zip(fluoro, names, pairing, strict=True):
        if pair.ultrasound is None:  # never fused to a clip acquired apart from it
            skipped.append((name, f"no ultrasound file within {PAIRING_LIMIT_S:g} s of it"))
            continue
        if pair.ultrasound not in read:
            image = read_image(pair.ultrasound)
            read[pair.ultrasound] = with_given_spacing(
                image, config.pair.moving_spacing_mm, fixed=False
            )
        us = read[pair.ultrasound]
        pairs, _ = pair_frames(fl, us, list(range(fl.n_frames)))
        close = [p for p in pairs if p[2] is None or abs(p[2]) <= PAIRING_LIMIT_S]
        if not close:
            skipped.append((name, f"no ultrasound frame within {PAIRING_LIMIT_S:g} s"))
            continue
        fi, uj, _ = close[0]
        landmarks = _landmarks_for(spec, fl, fi, uj, read_landmarks_csv)
        if landmarks is not None:
            check_landmarks_imaged(landmarks, fl, us)
        try:
            result = register_images(
                fl, us, fixed_frame=fi, moving_frame=uj, landmarks=landmarks,
                options=config.registration,
            )  # fmt: skip
        except RegistrationError as exc:
            # Ill-posed geometry, or no automatic start without landmarks: try the next run.
            skipped.append((name, str(exc)))
            refused |= not isinstance(exc, ValueError)  # the work failed, not the input
            without_landmarks |= landmarks is None
            continue
        return (fl, us, fi, uj, result, landmarks, name[1]), skipped
    raise _none_registered(spec, skipped, refused, without_landmarks)


def _none_registered(spec: CaseSpec, skipped, refused: bool, without_landmarks: bool):
    """The error of a case none of whose runs registered, naming each run and why."""
    hint = ""
    if without_landmarks:
        hint = (
            "; landmarks help: one CSV (name,moving_x,moving_y,fixed_x,fixed_y) in the "
            "case folder, or the manifest's landmarks column for batch"
        )
    error = FusionError if refused else InputError  # exit 1 as register, else 2
    tried = "; ".join(f"{n[0]}: {why}" for n, why in skipped)  # names for the terminal
    return error(
        f"case {spec.case_id}: no fluoroscopy run could be registered "
        f"({tried or 'none overlaps the ultrasound'}){hint}"
    )


def _read_pair(spec: CaseSpec, config: RunConfig, records: dict) -> tuple[list, list, list]:
    """The fluoroscopy runs, each run's ultrasound pairing, and the belonging checks.

    ``records`` (:func:`input_records`) give the labels the belonging records name them by.

    Every run is checked against its own ultrasound (or the one acquired nearest to it),
    and every ultrasound file against a run: the dose report counts them all, so a file
    of another patient would be counted as this one's. Ultrasound files are read here
    as headers only; the one registered is read whole when it is needed.
    """
    from .io import read_image
    from .pair import with_given_spacing

    fluoro = [
        with_given_spacing(
            read_image(p), config.pair.fixed_spacing_mm, fixed=True
        ).require_min_size()
        for p in spec.fluoro
    ]
    single = len(spec.ultrasound) == 1
    headers = {p: _us_header(p, raise_error=single) for p in spec.ultrasound}
    pairing = pair_runs(spec.ultrasound, fluoro, headers)
    belonging = []
    for fl, path, pair in zip(fluoro, spec.fluoro, pairing, strict=True):
        us_path = pair.ultrasound or _nearest(fl, headers)  # a run without: the nearest
        belonging.append(_belonging(config, records, fl, path, headers[us_path], us_path))
    paired = {us.ultrasound for us in pairing}
    heads = dict(zip(spec.fluoro, fluoro, strict=True))
    for p in spec.ultrasound:
        if p not in paired:  # a clip no run is paired with: checked against the nearest run
            head = headers[p] or _us_header(p, raise_error=True)
            run = _nearest(head, heads)
            belonging.append(_belonging(config, records, heads[run], run, head, p))
    return fluoro, pairing, belonging


def _us_header(path: str, *, raise_error: bool):
    """An ultrasound file's header-only image; None when unreadable and not ``raise_error``."""
    from .io import read_image

    try:
        return read_image(path, decode=False)
    except FusionError:
        if raise_error:
            raise
        return None  # read, and refused naming it, where it is checked


def _nearest(image, candidates: dict) -> str:
    """The path in ``candidates`` (path -> image) acquired nearest ``image``.

    The first one when acquisition times do not tell.
    """
    times = {
        p: abs((c.acquisition_datetime - image.acquisition_datetime).total_seconds())
        for p, c in candidates.items()
        if c is not None and c.acquisition_datetime and image.acquisition_datetime
    }
    return min(times, key=times.get) if times else next(iter(candidates))


def _belonging(config: RunConfig, records: dict, fl, fl_path: str, head, us_path: str) -> dict:
    """The belonging record of a run (its image and path) against an ultrasound file."""
    from .belonging import check_belonging

    head = head or _us_header(us_path, raise_error=True)
    labels = (records[fl_path]["input"], records[us_path]["input"])
    return check_belonging(
        fl, head, config.pair, include_phi=config.fusion.include_phi, labels=labels
    ).to_dict()


def _truth_text(truth: dict, key: str) -> str | None:
    """A text field of truth.json, or None when it is missing or not a string."""
    value = truth.get(key)
    return value if isinstance(value, str) else None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _landmarks_for(spec, fl, fi, uj, reader):
    """The landmark CSV of this frame pair: a synthetic case's per-pair file, or the case's."""
    if spec.landmark_dir:
        stem = Path(fl.source_path).stem.removeprefix("fluoro_")
        candidate = Path(spec.landmark_dir) / f"{stem}_f{fi:02d}_us{uj:02d}.csv"
        if candidate.is_file():
            return reader(candidate)
    return reader(spec.landmarks) if spec.landmarks else None


def unpaired_runs(summary: dict) -> list[str]:
    """The runs of a case that no ultrasound file was acquired with (as recorded)."""
    pairing = summary.get("ultrasound_pairing") or []
    return [p["fluoroscopy"] for p in pairing if p.get("ultrasound") is None]


def _unpaired_html(s: dict) -> str:
    runs = unpaired_runs(s)
    if not runs:
        return ""
    return (
        f"\n<p>No ultrasound file has a frame within {PAIRING_LIMIT_S:g} s of "
        f"{html_text(', '.join(runs))}: not registered or fused with a clip acquired "
        "apart from it.</p>"
    )


def _index_html(s: dict) -> str:
    r = s["registration"]
    d = s["dose"]
    tre = r.get("tre")
    tre_txt = (
        f"TRE vs truth: median {tre['median_mm']:.3f} mm, p95 {tre['p95_mm']:.3f} mm"
        if tre
        else "no ground truth"
    )
    saved = (
        f"{d['saved_dap_gy_cm2']:.3g} Gy·cm² (95 %: {d['saved_dap_interval_95'][0]:.3g}–"
        f"{d['saved_dap_interval_95'][1]:.3g})"
        if d["saved_dap_gy_cm2"] is not None
        else "not estimated"
    )
    rows = "".join(
        f"<tr><td>{html_text(k)}</td><td>{v:.2f} s</td></tr>" for k, v in s["timings_s"].items()
    )
    us = f"{html_text(r['ultrasound'])} " if r.get("ultrasound") else ""
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>hybridfuse case</title><style>body{{font-family:sans-serif;max-width:50em;margin:1em auto}}
td{{padding:.1em .6em}}</style></head><body>
<h1>Case {html_text(s["case_id"])}</h1>
<p><strong>Open first:</strong> <a href="fusion/viewer.html">the fusion viewer</a> ·
<a href="dose/report.html">the dose report</a> ·
<a href="registration/transform.json">the registration (transform.json)</a> ·
<a href="summary.json">summary.json</a></p>
<h2>Registration</h2><p>{html_text(r["fluoroscopy"])} frame {r["fixed_frame"]} ↔ ultrasound
{us}frame {r["moving_frame"]}; {html_text(str(r["model"]))} / {html_text(str(r["metric"]))};
{html_text(tre_txt)}.</p>{_unpaired_html(s)}
<h2>Dose</h2><p>Delivered DAP {
        d["dap_total_gy_cm2"]
        if d["dap_total_gy_cm2"] is None
        else f"{d['dap_total_gy_cm2']:.3g} Gy·cm²"
    }; saved by ultrasound {saved}.</p>
<h2>Timings</h2><table>{rows}</table>
<p>hybridfuse {html_text(s["software_version"])} — not for diagnostic use.</p></body></html>
"""
