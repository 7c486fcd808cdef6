"""Whether a fluoroscopy and an ultrasound file belong together: one patient, one study, one time.

Fusing images of two patients gives a picture that looks right and is wrong, so a pair
whose Patient ID, Patient's Name or Study Instance UID differ, or whose acquisition starts
lie further apart than a gap, is refused unless the user overrides it, and the override
is recorded. A value missing on either side cannot differ: that check is recorded as
not checked, never as passed.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from hybridfuse._safeio import file_record
from hybridfuse.dicom import acquisition_start, is_dicom_stream

from ._image import Image
from .errors import InputError
from .pair import PairOptions

__all__ = ["BelongingCheck", "MismatchError", "check_belonging"]

#: (record key, DICOM keyword, tag) of the identity checks, in the order they are said.
_IDENTITY = (
    ("patient_id", "PatientID", "(0010,0020)"),
    ("patient_name", "PatientName", "(0010,0010)"),
    ("study_instance_uid", "StudyInstanceUID", "(0020,000D)"),
)


class MismatchError(InputError):
    """The two images do not belong together (and the mismatch was not allowed)."""


@dataclass
class BelongingCheck:
    """Each check's outcome: ``"same"``/``"within"``, ``"differs"`` or ``"not checked: <why>"``."""

    fixed: str
    moving: str
    fixed_file: str | None = None
    moving_file: str | None = None
    checks: dict = field(default_factory=dict)
    acquisition_gap_s: float | None = None
    max_acquisition_gap_s: float = 3600.0
    allow_mismatch: bool = False

    @property
    def differing(self) -> list[str]:
        """The checks that failed (whether or not allowed)."""
        return [k for k, v in self.checks.items() if v == "differs"]

    def to_dict(self) -> dict:
        """JSON-ready record; ``overridden`` names the failed checks that were allowed.

        ``fixed``/``moving`` are the inputs' labels; ``fixed_file``/``moving_file`` (their
        file names) only when kept (``include_phi``).
        """
        named = {"fixed_file": self.fixed_file, "moving_file": self.moving_file}
        return {
            "fixed": self.fixed,
            "moving": self.moving,
            **{k: v for k, v in named.items() if v is not None},
            "checks": dict(self.checks),
            "acquisition_gap_s": self.acquisition_gap_s,
            "max_acquisition_gap_s": self.max_acquisition_gap_s,
            "allow_mismatch": self.allow_mismatch,
            "overridden": self.differing if self.allow_mismatch else [],
        }


def _header(image: Image):
    """The image's DICOM header (no pixels), or None for a plain image."""
    import pydicom

    from hybridfuse.dicom import quiet_pydicom

    if not image.source_path or not image.uids:
        return None
    try:
        with quiet_pydicom():
            return pydicom.dcmread(
                image.source_path,
                stop_before_pixels=True,
                defer_size=4096,
                force=is_dicom_stream(image.source_path),
            )
    except (OSError, ValueError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(
            f"{image.source_path}: cannot re-read the DICOM header ({type(exc).__name__})"
        ) from exc


def _text(ds, keyword: str) -> str:
    text = str(ds.get(keyword, "") or "").strip() if ds is not None else ""
    if keyword == "PatientName":
        # PS3.5 6.2.1: trailing empty components and groups may be left out, and
        # padding around a component is not part of it: "DOE^JOHN^^" is "DOE^JOHN".
        groups = ["^".join(c.strip() for c in g.split("^")).rstrip("^") for g in text.split("=")]
        text = "=".join(groups).rstrip("=")
    return text


def _utc_offset(ds, source: str) -> _dt.timedelta | None:
    """The UTC offset the acquisition start was written in, when the file says it."""
    from hybridfuse.dicom import parse_datetime

    if source.startswith("AcquisitionDateTime"):
        when = parse_datetime(str(ds.get("AcquisitionDateTime", "") or ""), aware=True)
        if when is not None and when.tzinfo is not None:
            return when.utcoffset()
    text = str(ds.get("TimezoneOffsetFromUTC", "") or "").strip()
    when = parse_datetime("20000101000000" + text, aware=True) if text else None
    return when.utcoffset() if when is not None and when.tzinfo is not None else None


def _gap_s(fixed_ds, moving_ds) -> float | None:
    """Seconds between the acquisition starts.

    The instants when both files give a UTC offset, else the wall clocks.
    """
    if fixed_ds is None or moving_ds is None:
        return None
    a, a_source = acquisition_start(fixed_ds)
    b, b_source = acquisition_start(moving_ds)
    if a is None or b is None:
        return None
    # Both clocks' UTC offsets known: compare the instants (one unit may write UTC,
    # the other local time); otherwise the wall clocks, as the units showed them.
    a_offset, b_offset = _utc_offset(fixed_ds, a_source), _utc_offset(moving_ds, b_source)
    if a_offset is not None and b_offset is not None:
        a, b = a - a_offset, b - b_offset
    return abs((b - a).total_seconds())


def _identity_check(fixed_ds, moving_ds, keyword: str) -> tuple[str, str, str]:
    """(outcome, fixed value, moving value) of one identity attribute."""
    if fixed_ds is None or moving_ds is None:
        return "not checked: not DICOM", "", ""
    a, b = _text(fixed_ds, keyword), _text(moving_ds, keyword)
    if not a or not b:
        side = "both" if not a and not b else ("fixed" if not a else "moving")
        return f"not checked: missing in {side}", a, b
    if keyword == "PatientName":  # one unit writes upper case, another as typed
        return ("same" if a.casefold() == b.casefold() else "differs"), a, b
    return ("same" if a == b else "differs"), a, b


def _label(img: Image, role: str) -> str:
    """``role (sha256 ...)`` of an image's file; the role alone for one read from memory."""
    if not img.source_path or not Path(img.source_path).is_file():
        return role
    return file_record(img.source_path, role=role)["input"]


def _span(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_belonging(
    fixed: Image,
    moving: Image,
    options: PairOptions | None = None,
    *,
    include_phi: bool = False,
    labels: tuple[str, str] | None = None,
) -> BelongingCheck:
    """Check that ``fixed`` and ``moving`` are of one patient, one study and one time.

    Returns the record of every check, naming the inputs by ``labels`` (fixed, moving;
    :func:`hybridfuse._safeio.input_label`, computed when not given) and by file name
    only with ``include_phi``. Raises :class:`MismatchError` (one line naming both
    files, for the user's terminal, and what differs; the values themselves only with
    ``include_phi``) when any check fails and ``options.allow_mismatch`` is off.
    """
    options = options or PairOptions()
    fixed_ds, moving_ds = _header(fixed), _header(moving)
    labels = labels or (_label(fixed, "fluoroscopy"), _label(moving, "ultrasound"))
    record = BelongingCheck(
        fixed=labels[0],
        moving=labels[1],
        fixed_file=Path(fixed.source_path).name if include_phi and fixed.source_path else None,
        moving_file=Path(moving.source_path).name if include_phi and moving.source_path else None,
        max_acquisition_gap_s=options.max_acquisition_gap_s,
        allow_mismatch=options.allow_mismatch,
    )
    reasons = []
    for key, keyword, tag in _IDENTITY:
        outcome, a, b = _identity_check(fixed_ds, moving_ds, keyword)
        record.checks[key] = outcome
        if outcome == "differs":
            reasons.append(
                f"{keyword} {tag} differs" + (f" ({a!r} vs {b!r})" if include_phi else "")
            )
    gap = _gap_s(fixed_ds, moving_ds)
    record.acquisition_gap_s = gap
    if gap is None:
        record.checks["acquisition_gap"] = "not checked: no acquisition time on one side"
    elif gap > options.max_acquisition_gap_s:
        record.checks["acquisition_gap"] = "differs"
        reasons.append(
            f"acquired {_span(gap)} apart (more than --max-acquisition-gap-s "
            f"{options.max_acquisition_gap_s:g})"
        )
    else:
        record.checks["acquisition_gap"] = "within"
    if reasons and not options.allow_mismatch:
        raise MismatchError(
            f"{fixed.source_path} and {moving.source_path} do not belong together: "
            f"{'; '.join(reasons)}; pass --allow-mismatch to go on anyway"
        )
    return record
