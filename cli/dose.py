"""``hybridfuse dose ...``: dose reports from X-ray dose records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hybridfuse.dose.options import DoseOptions

from .options import built, definition_options, json_option, overwrite_option


@click.group()
def dose() -> None:
    """Radiation dose: what the X-ray unit recorded and what ultrasound guidance saved."""


@dose.command("report")
@click.option(
    "--rdsr",
    "rdsr_path",
    type=click.Path(path_type=Path),
    help="X-Ray Radiation Dose SR (TID 10001).",
)
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Without an RDSR: X-ray images whose dose attributes to sum (repeat).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@definition_options(DoseOptions, only=("procedure", "region"))
@click.option(
    "--us",
    "us_clips",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ultrasound cine whose times give an ultrasound-guided interval (repeat).",
)
@click.option(
    "--us-interval",
    "us_intervals",
    multiple=True,
    help="START,END seconds from the first irradiation event (repeat).",
)
@click.option(
    "--guided-phase",
    default=None,
    help=(
        "START,END seconds from the first irradiation event: the fluoroscopy-guided phase is "
        "the taps starting between START and END (default: found from the taps)."
    ),
)
@click.option(
    "--coefficients",
    type=click.Path(path_type=Path),
    help="CSV region,coefficient_msv_per_gy_cm2,source for effective dose "
    "[default: the shipped table, dose/tables/effective_dose_coefficients.csv].",
)
@click.option(
    "--table-transmission",
    default=None,
    help="LO,HI table transmission for an entrance-kerma estimate.",
)
@definition_options(DoseOptions, only=("seed",))
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, exists=True),
    help="Registry whose fluoroscopy-only procedures of this type give the baseline.",
)
@definition_options(DoseOptions, only=("corrections", "force"))
@click.option(
    "--include-phi",
    is_flag=True,
    help="Keep patient name, ID and birth date, and name input files by file name and path "
    "(otherwise by role and sha256).",
)
@overwrite_option
@json_option
def report(
    rdsr_path,
    image_paths,
    out_dir,
    us_clips,
    us_intervals,
    guided_phase,
    coefficients,
    table_transmission,
    db_path,
    include_phi,
    overwrite,
    as_json,
    **options,
):
    """Write OUT/dose.json, OUT/events.csv and OUT/report.html for one procedure.

    Delivered totals come from the unit's accumulated totals; event sums are reconciled
    against them per plane and contradictions are flagged. Without an RDSR, --images sums
    the per-image dose attributes (a lower bound: unstored fluoroscopy is missing).
    """
    from hybridfuse.dose.report import (
        build_dose_report,
        build_image_dose_report,
        load_coefficients,
        write_dose_outputs,
    )

    chosen = built(DoseOptions, options)
    procedure, region, seed = chosen.procedure, chosen.region, chosen.seed
    corrections_path = Path(chosen.corrections) if chosen.corrections else None
    target = out_dir / "dose.json"
    if rdsr_path is None and not image_paths:
        raise click.UsageError("give --rdsr FILE, or --images FILE... when there is no RDSR")
    if db_path is not None and not procedure:
        from hybridfuse.dose import DoseInputError

        raise DoseInputError("--db gives a baseline only for a --procedure; give --procedure")
    inputs = [rdsr_path, *image_paths, *us_clips, db_path, coefficients, corrections_path]
    _check_out(out_dir, inputs, overwrite)
    if corrections_path is not None and rdsr_path is None:
        raise click.UsageError("--corrections needs --rdsr (it is matched on the RDSR's unit)")
    corrections = _load_corrections(corrections_path)
    if rdsr_path is None:
        rep = build_image_dose_report(
            image_paths, include_phi=include_phi, procedure=procedure, region=region
        )
    else:
        rep = build_dose_report(
            rdsr_path,
            include_phi=include_phi,
            procedure=procedure,
            region=region,
            us_clips=us_clips,
            us_intervals=[_pair(v, "--us-interval") for v in us_intervals],
            guided_phase=_pair(guided_phase, "--guided-phase") if guided_phase else None,
            coefficients=load_coefficients(coefficients) if coefficients else None,
            table_transmission=(
                _pair(table_transmission, "--table-transmission") if table_transmission else None
            ),
            seed=seed,
            registry_values=_registry_values(db_path, procedure),
            force=chosen.force,
        )
    if corrections is not None:
        from hybridfuse.dose.corrections import apply_corrections

        rep["corrections"] = apply_corrections(rep, corrections, corrections_path)
    written = _write_owned(out_dir, overwrite, lambda tmp: write_dose_outputs(rep, tmp))
    d = rep["delivered"]
    if as_json:
        # Exactly what was written, so the two never disagree.
        sys.stdout.write(target.read_text(encoding="utf-8") + "\n")
        return
    _echo(f"dose report written: {', '.join(str(p) for p in written)}")

    def fmt(v, unit):
        return "unknown" if v is None else f"{v:.4g} {unit}"

    _echo(
        f"  DAP {fmt(d['dap_total_gy_cm2'], 'Gy·cm²')} (fluoro "
        f"{fmt(d['fluoro_dap_gy_cm2'], 'Gy·cm²')}), Ka,r {fmt(d['ka_r_total_mgy'], 'mGy')},"
        f" fluoro time {fmt(d['fluoro_time_s'], 's')}, "
        + (
            f"{d['n_images']} image(s)"
            if "n_images" in d
            else f"{d['n_events']} events, {d['n_planes']} plane(s)"
        )
    )
    cf = (rep.get("saved") or {}).get("counterfactual")
    if cf:
        p, iv = cf["point"], cf["interval_95"]
        _echo(
            f"  saved by ultrasound: DAP {fmt(p['dap_gy_cm2'], 'Gy·cm²')} "
            f"[{iv['dap_gy_cm2'][0]:.3g}-{iv['dap_gy_cm2'][1]:.3g}], fluoro time "
            f"{fmt(p['fluoro_time_s'], 's')} [{iv['fluoro_time_s'][0]:.3g}-"
            f"{iv['fluoro_time_s'][1]:.3g}] (95 %)"
        )
    for flag in rep["flags"]:
        _echo(f"  flag: {flag}")


def _load_corrections(path):
    if path is None:
        return None
    from hybridfuse.dose.corrections import load_corrections

    return load_corrections(path)


def _echo(text: str, **kw) -> None:
    """click.echo with control characters (ESC, BEL, ...) from file names or data escaped."""
    from hybridfuse._safeio import terminal_text

    click.echo(terminal_text(text), **kw)


def _check_out(out_dir: Path, inputs, overwrite: bool) -> None:
    """Before any work: --out may not hold an input, nor be someone else's non-empty folder."""
    from hybridfuse._safeio import UnsafeOutputError, check_out_separate, check_out_target

    if out_dir.name in ("", ".", ".."):
        raise UnsafeOutputError(f"--out {out_dir}: name the output folder itself, not . or ..")
    try:
        check_out_separate(out_dir, [p for p in inputs if p is not None])
        check_out_target(out_dir, overwrite)
    except FileExistsError:
        raise
    except OSError as exc:
        raise UnsafeOutputError(f"--out {out_dir}: cannot be used ({exc})") from exc


def _write_owned(out_dir: Path, overwrite: bool, write) -> list[Path]:
    """Run ``write(folder)`` in a fresh owned folder that then replaces ``out_dir``.

    ``out_dir`` gets the ``.hybridfuse-output`` marker; it must be absent, empty, or
    (with ``overwrite``) a folder hybridfuse wrote. Returns the final paths.
    """
    from hybridfuse._safeio import atomic_directory

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        written = write(tmp)
    return [out_dir / Path(p).name for p in written]


def _registry_values(db_path, procedure):
    if not db_path or not procedure:
        return None
    from hybridfuse.dose.registry import Registry

    reg = Registry(db_path, create=False)
    try:
        return reg.baseline_values(procedure)
    finally:
        reg.close()


#: Largest |time| (s from the first irradiation) --us-interval and --guided-phase accept.
_MAX_OFFSET_S = 86400.0


def _pair(text: str, flag: str) -> tuple[float, float]:
    import math

    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(
            f"expected START,END numbers, got {text!r}", param_hint=flag
        ) from exc
    if not (math.isfinite(a) and math.isfinite(b)):
        raise click.BadParameter(f"numbers must be finite, got {text!r}", param_hint=flag)
    if flag != "--table-transmission" and max(abs(a), abs(b)) > _MAX_OFFSET_S:
        # Seconds from the first irradiation: more than a day away is no time of this
        # procedure, even with --force (whose sums would overflow to inf).
        raise click.BadParameter(
            f"times are seconds from the first irradiation event, within "
            f"±{_MAX_OFFSET_S:g} s (a day), got {text!r}",
            param_hint=flag,
        )
    if b < a or (b == a and flag == "--guided-phase"):
        raise click.BadParameter(f"END not after START in {text!r}", param_hint=flag)
    if flag == "--table-transmission" and not (0 < a and b <= 1):
        raise click.BadParameter(
            f"transmissions are fractions in (0, 1], got {text!r}", param_hint=flag
        )
    return (a, b)


@dose.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Registry file (SQLite; created if absent).",
)
@click.option("--procedure", default=None, help="Procedure type of RDSR files given here.")
@click.option("--region", default=None, help="Body region of RDSR files given here.")
@click.option(
    "--guidance",
    default="fluoro",
    show_default=True,
    type=click.Choice(["fluoro", "us"]),
    help="For RDSR files: fluoroscopy-only or ultrasound-guided procedures.",
)
@click.option(
    "--include-phi",
    is_flag=True,
    help="Also keep each study's accession number, study date and calendar month "
    "(patient data), for 'dose audit --include-phi', and the input files' names.",
)
@json_option
def ingest(files, db_path, procedure, region, guidance, include_phi, as_json):
    """Add dose reports (RDSR files, or dose.json from 'dose report') to a registry.

    Re-ingesting the same report changes nothing, except filling in what an earlier
    ingest did not keep (its month; with --include-phi its accession number and date).
    A different report reusing a SOP Instance UID is kept as a distinct procedure and the
    conflict is reported. One bad file does not stop the others; exit 2 if any file
    could not be ingested.
    """
    from hybridfuse._safeio import one_line
    from hybridfuse.dose.registry import Registry

    from .errors import exit_code_for

    reg = Registry(db_path)
    results, worst = [], 0
    try:
        for path in files:
            try:
                rep, events, pid = _report_for_ingest(path, procedure, region, guidance)
                phi = (rep.get("_study_ids") or {}) if include_phi else None
                res = reg.ingest(rep, events, patient_id=pid, phi=phi)
                if "_study_ids" not in rep:  # a dose.json whose RDSR was not found
                    res["status"] += " (its RDSR not found: no month, accession number or date)"
            except Exception as exc:
                worst = max(worst, exit_code_for(exc) or 2)
                message = one_line(exc)
                if message.startswith(str(path)):
                    message = message[len(str(path)) :].lstrip(": ")
                res = {"status": "error", "error": message}
            res["file"] = str(path)
            results.append(res)
            if not as_json:
                extra = f" ({res['conflict']})" if res.get("conflict") else ""
                if res["status"] == "error":  # as `info` and the top-level errors say it
                    _echo(f"hybridfuse: error: {path}: {res['error']}", err=True)
                else:
                    _echo(f"{path}: {res['status']}{extra}")
    finally:
        reg.close()
    if as_json:
        click.echo(json.dumps(results, indent=1))
    sys.exit(worst)


#: A dose.json larger than this is refused before it is read (ours are a few hundred kB).
MAX_DOSE_JSON_BYTES = 64 << 20


def _report_for_ingest(path: Path, procedure, region, guidance):
    from hybridfuse.dose.report import build_dose_report

    if path.suffix.lower() == ".json":
        return _dose_json_for_ingest(path)
    # The report as recorded: the registry pseudonymises its UIDs with the registry's own
    # secret (not the user's key, which a registry host may not have) and names the file
    # by its label, by its name (never its path) only with --include-phi (_stored_record).
    rep = build_dose_report(path, include_phi=True, procedure=procedure, region=region)
    _study_ids(rep, path)
    rep["_source"] = str(path)
    if guidance == "us":
        rep["saved"] = {"counterfactual": {"point": {}, "note": "marked ultrasound-guided"}}
    return rep, rep["_events"], rep.get("_patient_id")


def _study_ids(rep: dict, rdsr: Path) -> None:
    """The RDSR's accession number and study date, for the registry's month and PHI."""
    from hybridfuse.dose.study_ids import study_identifiers

    ids = study_identifiers(rdsr)
    rep["_study_ids"] = ids
    rep["_study_date"] = ids["study_date"]


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _dose_json_for_ingest(path: Path):
    """A dose.json, validated field by field; its RDSR's events when the RDSR is found.

    The RDSR is looked for at the recorded path and beside the dose.json under its
    recorded file name (a report written with --include-phi, or by an earlier
    hybridfuse), else among the files beside the dose.json (:func:`_beside`); it is used
    only when its sha256 matches the one recorded.
    """
    from hybridfuse._safeio import sha256_file
    from hybridfuse.dose import DoseInputError, read_rdsr
    from hybridfuse.dose.registry import validate_report

    try:
        if path.stat().st_size > MAX_DOSE_JSON_BYTES:
            raise DoseInputError(f"{path}: larger than {MAX_DOSE_JSON_BYTES >> 20} MiB")
        rep = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise DoseInputError(f"{path}: not a readable dose.json ({why})") from exc
    if not isinstance(rep, dict) or rep.get("schema") != "hybridfuse.dose/1":
        schema = rep.get("schema") if isinstance(rep, dict) else None
        raise DoseInputError(f"{path}: schema {schema!r} is not hybridfuse.dose/1")
    validate_report(rep, path)
    rep["_source"] = str(path)
    first = rep["inputs"][0]
    candidates = [Path(first[k]) for k in ("path",) if first.get(k)]
    if first.get("file"):
        candidates.append(path.parent / Path(first["file"]).name)
    rec = None
    for rdsr in [*candidates, *_beside(path, candidates)]:
        try:
            same = rdsr.is_file() and sha256_file(rdsr) == first["sha256"]
        except OSError:  # unreadable, or gone since listed: not this dose.json's RDSR
            continue
        if same:
            rec = read_rdsr(rdsr)
            break
    rep["_study_uid"] = rec.study_instance_uid if rec else None
    rep["_sop_uid"] = rec.sop_instance_uid if rec else None
    if rec:
        _study_ids(rep, Path(rec.path))
    return rep, (rec.events if rec else []), (rec.patient.get("id") if rec else None)


#: At most this many files beside a dose.json are hashed in search of its RDSR.
MAX_BESIDE_FILES = 64


def _beside(dose_json: Path, tried: list[Path]):
    """Files beside a dose.json that may be its RDSR, by name, lazily (hashed by the caller).

    A dose.json written without --include-phi names its RDSR by sha256 only; the files
    beside it (the outputs, an RDSR copied there) are few. Bounded in count and size.
    """
    from hybridfuse.dose.rdsr import MAX_SR_BYTES

    try:
        entries = sorted(dose_json.parent.iterdir())
    except OSError:
        return
    for entry in entries[:MAX_BESIDE_FILES]:
        try:
            small = entry.is_file() and entry.stat().st_size <= MAX_SR_BYTES
        except OSError:
            continue
        if small and entry != dose_json and entry not in tried:
            yield entry


@dose.command("audit")
@click.option("--db", "db_path", required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--drl",
    "drl_path",
    type=click.Path(path_type=Path),
    help="CSV procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--include-phi",
    is_flag=True,
    help="List outliers with accession number and study date, and show calendar months "
    "(kept only by 'dose ingest --include-phi'); otherwise by pseudonym, months relative.",
)
@overwrite_option
@json_option
def audit_cmd(db_path, drl_path, out_dir, include_phi, overwrite, as_json):
    """Audit a registry by procedure type and region.

    Medians, 75th percentiles, comparison with diagnostic reference levels, outliers and
    UID conflicts, as OUT/audit.csv, OUT/audit.json and OUT/audit.html; ultrasound-guided
    against fluoroscopy-only procedures of each type (and unit) as OUT/cohorts.csv; per
    month as OUT/monthly.csv.
    """
    from hybridfuse.dose.audit import audit, load_drl, write_audit
    from hybridfuse.dose.registry import Registry

    _check_out(out_dir, [db_path, drl_path], overwrite)
    reg = Registry(db_path, create=False)
    try:
        drl = load_drl(drl_path) if drl_path else None
        result = audit(reg, drl, include_phi=include_phi)
        written = _write_owned(out_dir, overwrite, lambda tmp: write_audit(result, reg, tmp))
    finally:
        reg.close()
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    _echo(f"audit of {result['procedures']} procedures: {', '.join(str(p) for p in written)}")
    for g in result["groups"]:
        dap = g["dap_total_gy_cm2"]
        _echo(
            f"  {g['procedure']} / {g['region']}: n={g['count']}, DAP median "
            f"{dap.get('median', float('nan')):.3g} Gy·cm², p75 "
            f"{dap.get('p75', float('nan')):.3g}"
        )
    for c in result["cohorts"]["by_group"]:
        dap = c["dap_total_gy_cm2"]
        lo, hi = dap.get("difference_interval_95") or (None, None)
        detail = (
            f"difference {dap['difference']:.3g} Gy·cm² (95 % {lo:.3g} to {hi:.3g}), "
            f"Mann-Whitney p {dap['mann_whitney_p']:.2g}"
            if "difference" in dap
            else dap.get("reason", "")
        )
        _echo(
            f"  {c['procedure']} / {c['region']}: DAP fluoroscopy-only n={dap['n_fluoro_only']} "
            f"vs ultrasound-guided n={dap['n_us_guided']}: {detail}"
        )
    monthly = result["monthly"]
    _echo(
        f"  monthly: {monthly['months']} months"
        if monthly["available"]
        else f"  no monthly view: {monthly['reason']}"
    )
    _echo(
        f"  {len(result['outliers'])} outlier value(s), {len(result['conflicts'])} UID conflict(s)"
    )
