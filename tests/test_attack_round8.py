"""Round-8 attacks on what landed for issues #15-#18: each test failed before its fix."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.belonging import MismatchError, check_belonging
from hybridfuse.fusion.errors import CorruptFileError
from hybridfuse.testdata import sample_case
from tests.fusion.test_display import _ramp, _read, _us

FLUORO = "fluoro_run02_confirm_lateral.dcm"


def _copy(tmp_path, name, source, **changes):
    """A copy of a sample file with ``changes`` (keyword: value; None deletes)."""
    ds = pydicom.dcmread(sample_case() / source)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / name
    ds.save_as(path)
    return read_image(path, decode=False)


# --- belonging: UTC offsets and Patient's Name spelling ---------------------------------


def test_acquisition_times_with_utc_offsets_are_compared_as_instants(tmp_path):
    # One unit writes UTC, the other local time at +02:00: 60 s apart, not 2 h 1 min.
    fixed = _copy(tmp_path, "f.dcm", FLUORO, AcquisitionDateTime="20260115090000+0000")
    moving = _copy(tmp_path, "m.dcm", "us_clip.dcm", AcquisitionDateTime="20260115110100+0200")
    record = check_belonging(fixed, moving).to_dict()
    assert record["acquisition_gap_s"] == pytest.approx(60.0)
    assert record["checks"]["acquisition_gap"] == "within"


def test_timezone_offset_from_utc_is_used_for_da_tm_pairs(tmp_path):
    fixed = _copy(tmp_path, "f.dcm", FLUORO, TimezoneOffsetFromUTC="+0000")
    ds = pydicom.dcmread(sample_case() / "us_clip.dcm")
    hour = int(str(ds.AcquisitionTime)[:2]) + 3
    moving = _copy(
        tmp_path,
        "m.dcm",
        "us_clip.dcm",
        AcquisitionDateTime=None,
        AcquisitionTime=f"{hour:02d}" + str(ds.AcquisitionTime)[2:],
        TimezoneOffsetFromUTC="+0300",
    )
    record = check_belonging(fixed, moving).to_dict()
    assert record["checks"]["acquisition_gap"] == "within"
    assert record["acquisition_gap_s"] < 600


def test_offsets_on_one_side_only_still_compare_wall_clocks(tmp_path):
    fixed = read_image(sample_case() / FLUORO, decode=False)
    ds = pydicom.dcmread(sample_case() / "us_clip.dcm")
    moving = _copy(
        tmp_path, "m.dcm", "us_clip.dcm", AcquisitionDateTime=str(ds.AcquisitionDateTime) + "+0500"
    )
    plain = check_belonging(fixed, read_image(sample_case() / "us_clip.dcm", decode=False))
    assert check_belonging(fixed, moving).acquisition_gap_s == pytest.approx(
        plain.acquisition_gap_s
    )


def test_a_real_gap_across_offsets_is_still_refused(tmp_path):
    fixed = _copy(tmp_path, "f.dcm", FLUORO, AcquisitionDateTime="20260115090352+0000")
    # 09:03 local at +02:00 is 07:03 UTC: two hours before the fluoroscopy.
    moving = _copy(tmp_path, "m.dcm", "us_clip.dcm", AcquisitionDateTime="20260115090352+0200")
    with pytest.raises(MismatchError, match="apart"):
        check_belonging(fixed, moving)


@pytest.mark.parametrize(
    "name", ["PHANTOM^SYNTHETIC^^^", "PHANTOM^SYNTHETIC^", " PHANTOM ^SYNTHETIC"]
)
def test_patient_name_with_trailing_empty_components_is_the_same_name(tmp_path, name):
    fixed = read_image(sample_case() / FLUORO, decode=False)
    moving = _copy(tmp_path, "m.dcm", "us_clip.dcm", PatientName=name)
    assert check_belonging(fixed, moving).checks["patient_name"] == "same"


def test_a_different_given_name_still_differs(tmp_path):
    fixed = read_image(sample_case() / FLUORO, decode=False)
    moving = _copy(tmp_path, "m.dcm", "us_clip.dcm", PatientName="PHANTOM^OTHER")
    with pytest.raises(MismatchError, match="PatientName"):
        check_belonging(fixed, moving)


# --- display: hostile palette lookup tables say what is wrong ---------------------------


def _palette_us(descriptor, data: bytes):
    ds = _us(_ramp(), "PALETTE COLOR")
    for tag in (0x1101, 0x1102, 0x1103):
        ds.add_new((0x0028, tag), "US", list(descriptor))
        ds.add_new((0x0028, tag + 0x100), "OW", data)
    return ds


@pytest.mark.parametrize(
    ("descriptor", "data", "said"),
    [
        ((256, 0, 12), np.arange(256, dtype="<u2").tobytes(), "declares 12 bits per entry"),
        ((256, 0, 16), np.arange(10, dtype="<u2").tobytes(), "holds 20 bytes"),
        ((256, 0, 16), np.arange(2500, dtype="<u2").tobytes(), "holds 5000 bytes"),
        ((0, 0, 16), b"", "is missing or empty"),
    ],
)
def test_hostile_palette_names_the_lut_and_what_is_wrong(tmp_path, descriptor, data, said):
    with pytest.raises(CorruptFileError) as err:
        _read(_palette_us(descriptor, data), tmp_path)
    message = str(err.value)
    assert "x.dcm" in message and "Palette Color Lookup Table" in message and said in message
    assert "uint" not in message and "NoneType" not in message  # no library internals


def test_palette_of_65536_entries_written_as_0_still_shows(tmp_path):
    lut = (np.arange(65536) >> 8).astype("<u2").tobytes()
    shown = _read(_palette_us((0, 0, 16), lut), tmp_path)
    assert shown.shape[-1] == 3 or shown.ndim == 2


# --- PACS: a peer that starts a PDU and goes silent -------------------------------------


def test_pacs_peer_that_sends_half_a_pdu_times_out_instead_of_hanging():
    import socket
    import subprocess
    import sys
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            # An A-ASSOCIATE-AC header announcing 4 GiB, then nothing.
            conn.sendall(b"\x02\x00\xff\xff\xff\xff" + b"A" * 64)

    threading.Thread(target=serve, daemon=True).start()
    code = "from hybridfuse.cli.main import main; main()"
    args = ["pacs", "echo", "--to", f"127.0.0.1:{port}", "--timeout", "1"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            check=False,
            capture_output=True,
            timeout=60,
            text=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("pacs echo hung on a peer that sent half a PDU (--timeout 1)")
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert done.returncode == 6, done.stderr
    assert done.stderr.count("\n") == 1 and "within 1 s" in done.stderr


# --- dose: --force with an interval at the edge of the floats ---------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--us-interval", "0,1.7e308", "--force"],
        ["--us-interval", "-1e300,10", "--force"],
        ["--guided-phase", "0,1e300", "--us-interval", "0,10"],
    ],
)
def test_dose_interval_beyond_a_day_is_refused_even_with_force(tmp_path, flags):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    out = tmp_path / "dose"
    result = CliRunner().invoke(
        cli,
        ["dose", "report", "--rdsr", str(sample_case() / "rdsr.dcm"), "--out", str(out), *flags],
    )
    assert result.exit_code == 2, result.output
    assert "a day" in result.output and "inf" not in result.output.replace("info", "")
    assert not out.exists()


# --- automatic start: an ultrasound of one pixel ----------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 640), (2, 9)])
def test_bead_detection_on_a_sliver_finds_nothing_instead_of_crashing(shape):
    from hybridfuse.registration.features import detect_beads

    blobs = detect_beads(np.zeros(shape), None, (0.1, 0.1), bright=True)
    assert len(blobs.xy) == 0


def test_register_a_one_pixel_ultrasound_is_refused_not_an_internal_error(tmp_path):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    path = tmp_path / "one.dcm"
    _us(np.array([[7]], np.uint8), "MONOCHROME2").save_as(path, enforce_file_format=True)
    out = tmp_path / "r"
    args = ["register", "--fixed", str(sample_case() / FLUORO), "--moving", str(path)]
    args += ["--moving-spacing-mm", "0.1,0.1", "--out", str(out), "--allow-mismatch"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code in (1, 2), result.output
    assert "internal error" not in result.output and "0 beads" in result.output
    assert not out.exists()


# --- dose: a corrections file naming one unit twice --------------------------------------


def test_corrections_naming_one_unit_twice_are_refused(tmp_path):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    toml = tmp_path / "dup.toml"
    toml.write_text(
        '[[unit]]\nmanufacturer = "hybridfuse"\nmodel = "synthetic phantom"\nsource = "a"\n'
        "dap_calibration = 0.8\n"
        '[[unit]]\nmanufacturer = "HYBRIDFUSE"\nmodel = "synthetic  phantom"\nsource = "b"\n'
        "dap_calibration = 1.2\n"
    )
    out = tmp_path / "dose"
    args = ["dose", "report", "--rdsr", str(sample_case() / "rdsr.dcm"), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--corrections", str(toml)])
    assert result.exit_code == 2, result.output
    assert "dup.toml: [[unit]] 2 repeats [[unit]] 1" in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", [["echo", "--to"], ["get", "--study", "1.2.3", "--from"]])
def test_pacs_timeout_nan_is_a_usage_error(tmp_path, command):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    args = ["pacs", *command, "127.0.0.1:9", "--timeout", "nan"]
    if command[0] == "get":
        args += ["--out", str(tmp_path / "g")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and "internal error" not in result.output
    assert not (tmp_path / "g").exists()


# --- derived DICOM with --include-phi: source values their VR refuses --------------------


def test_derived_dicom_leaves_out_values_their_vr_refuses():
    from pydicom.dataset import Dataset

    from hybridfuse.fusion.dicom_out import derived_dataset

    src = Dataset()
    with warnings.catch_warnings():  # pydicom warns of each value as it is set
        warnings.simplefilter("ignore")
        src.PatientName = "A" * 70 + "^" + "B" * 70  # a PN component group over 64 chars
        src.PatientID = "ID\\WITH\\BACKSLASH"  # three values of a VM 1 attribute
        src.PatientBirthDate = "19451340"  # month 13
        src.PatientSex = "M"
        src.StudyInstanceUID = "1.2.3.4"
        src.StudyDate = "20260230"  # 30 February
        src.StudyTime = "256100"
        src.AccessionNumber = "A" * 20  # SH over 16
        src.StudyID = "S1"
    ds = derived_dataset("1.2.840.10008.5.1.4.1.1.7", src, deid=None)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime"):
        assert ds.get(keyword) in ("", None), keyword
    assert ds.AccessionNumber == ""
    assert ds.PatientSex == "M" and ds.StudyID == "S1"  # valid values are still copied


def test_derived_dicom_keeps_valid_patient_values():
    from pydicom.dataset import Dataset

    from hybridfuse.fusion.dicom_out import derived_dataset

    src = Dataset()
    src.PatientName = "DOE^JOHN=ドウ^ジョン"
    src.PatientID = "X" * 64
    src.PatientBirthDate = "19450607"
    src.StudyDate = "20240229"
    src.StudyTime = "235960.5"
    src.AccessionNumber = "A" * 16
    ds = derived_dataset("1.2.840.10008.5.1.4.1.1.7", src, deid=None)
    assert str(ds.PatientName) == "DOE^JOHN=ドウ^ジョン" and ds.PatientID == "X" * 64
    assert ds.PatientBirthDate == "19450607" and ds.StudyDate == "20240229"
    assert ds.StudyTime == "235960.5" and ds.AccessionNumber == "A" * 16


# --- automatic start: three matched beads check nothing ----------------------------------


def test_auto_start_with_a_wrong_spacing_is_refused_or_right_never_confidently_wrong(tmp_path):
    # A --moving-spacing-mm 20 % off the calibration (0.15 mm) once let three wrong beads
    # match; the affine through them fitted exactly and was accepted 32 mm off the truth.
    import json

    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    case, out = sample_case(), tmp_path / "r"
    args = ["register", "--fixed", str(case / FLUORO), "--moving", str(case / "us_clip.dcm")]
    args += ["--moving-frame", "6", "--moving-spacing-mm", "0.18,0.18", "--out", str(out)]
    args += ["--truth", str(case / "truth.json")]
    result = CliRunner().invoke(cli, args)
    if result.exit_code == 1:  # refused: nothing written, the reason said
        assert "unverified" in result.output and not out.exists()
        return
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transform.json").read_text())
    assert record["quality"]["verdict"] == "accepted"
    assert record["tre"]["median_mm"] < 2.0  # accepted means right


# --- outputs: a file on the way to --out is found before the work ------------------------


def test_pacs_get_into_a_path_under_a_file_is_refused_before_any_network(tmp_path):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"
    # Port 9 (discard) on 127.0.0.1: refused or silent, either way not reached first.
    args = ["pacs", "get", "--from", "127.0.0.1:9", "--study", "1.2.3", "--timeout", "1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "afile is not a folder" in result.output


def test_rescale_that_overflows_is_refused_not_shown_all_white(tmp_path):
    ds = _us(_ramp(), "MONOCHROME2", RescaleSlope="1e308", RescaleIntercept="1e308")
    with pytest.raises(CorruptFileError, match=r"x\.dcm: Rescale Slope/Intercept .*overflow"):
        _read(ds, tmp_path)
