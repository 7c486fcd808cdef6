"""``hybridfuse pacs`` against a real Orthanc started by the test on free ports.

Orthanc (Debian package ``orthanc``) runs with a temporary configuration: storage in
tmp_path, our AE title declared (C-GET needs it), no remote access. The tests skip with
the reason when the binary is absent; ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
#: Only the tests that talk to a real archive need Orthanc; the others run everywhere.
needs_orthanc = pytest.mark.skipif(
    ORTHANC is None,
    reason="Orthanc is not installed (Debian package 'orthanc'; .ci/run installs it)",
)

#: Storage limit of the strict Orthanc (MB): a larger instance gets a real failure status.
STRICT_STORAGE_MB = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def _orthanc(folder: Path, *, check_called_aet: bool = False, max_storage_mb: int = 0):
    """An Orthanc on free ports, stopped after; yields its DICOM port and the port it sends
    C-MOVE results to (our AE title's) once it answers."""
    folder.mkdir(parents=True)
    dicom_port, http_port, move_port = _free_port(), _free_port(), _free_port()
    config = {
        "Name": "hybridfuse-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": check_called_aet,
        "DicomModalities": {"hybridfuse": ["HYBRIDFUSE", "127.0.0.1", move_port]},
        "Plugins": [],
        "MaximumStorageSize": max_storage_mb,  # 0: no limit
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not _answers(http_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()}")
            time.sleep(0.1)
        yield dicom_port, move_port
    finally:
        # Killed, not stopped: its storage is thrown away, and a clean stop took ~4 s.
        proc.kill()
        proc.wait()
        log.close()


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory):
    """Orthanc's address and the port it sends C-MOVE results to."""
    with _orthanc(tmp_path_factory.mktemp("orthanc") / "server") as (port, move_port):
        yield f"127.0.0.1:{port}", move_port


@pytest.fixture
def orthanc(orthanc_server):
    return orthanc_server[0]


@pytest.fixture(scope="module")
def strict_orthanc(tmp_path_factory):
    """An Orthanc that checks the called AE title and stores at most 1 MB."""
    folder = tmp_path_factory.mktemp("orthanc-strict") / "server"
    with _orthanc(folder, check_called_aet=True, max_storage_mb=STRICT_STORAGE_MB) as ports:
        yield f"127.0.0.1:{ports[0]}"


def _pacs(*args: str):
    return CliRunner().invoke(cli, ["pacs", *args])


def _one_error_line(r) -> str:
    progress = ("  sent ", "  received ")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(progress)]
    assert len(lines) == 1, r.stderr  # no pynetdicom log, no traceback
    assert lines[0].startswith("hybridfuse: error: ")
    return lines[0]


def _study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _by_instance(folder: Path) -> dict[str, pydicom.Dataset]:
    return {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm")))
    }


@needs_orthanc
def test_echo(orthanc):
    r = _pacs("echo", "--to", orthanc, "--called-aet", "ORTHANC")
    assert r.exit_code == 0, r.output
    assert "C-ECHO ok" in r.stdout


@pytest.fixture(scope="module")
def fused_outputs(tmp_path_factory):
    """The fused Secondary Capture and the Spatial Registration of the sample case."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.fuse import fuse_images
    from hybridfuse.registration import Transform
    from hybridfuse.testdata.phantom import load_truth

    case = sample_case()
    pair = next(p for p in load_truth(case)["pairs"] if not p["edge_on"])
    affine = np.asarray(pair["moving_to_fixed_pixel"], dtype=float)
    affine = affine / affine[2, 2]
    affine[2, :2] = 0.0  # a Spatial Registration holds rigid to affine transforms only
    out = tmp_path_factory.mktemp("fused") / "out"
    fuse_images(
        read_image(case / pair["fluoro_file"]),
        read_image(case / "us_clip.dcm"),
        Transform(affine, "affine"),
        out,
        video="none",
        frames=[0],
        registration_dicom=True,
    )
    return out / "fused_sc.dcm", out / "registration.dcm"


@needs_orthanc
def test_send_then_get_gives_the_same_datasets(orthanc, fused_outputs, tmp_path):
    r = _pacs("send", *map(str, fused_outputs), "--to", orthanc, "--called-aet", "ORTHANC")
    assert r.exit_code == 0, r.output
    assert "sent 2 file(s)" in r.stdout
    assert r.stderr.count("sent ") == 2  # one progress line per file
    sent = {}
    for path in fused_outputs:
        ds = pydicom.dcmread(path)
        sent[str(ds.SOPInstanceUID)] = ds
    got = {}
    for i, study in enumerate(sorted({_study_uid(p) for p in fused_outputs})):
        out = tmp_path / f"got{i}"
        r = _pacs("get", "--study", study, "--from", orthanc, "--out", str(out))
        assert r.exit_code == 0, r.output
        assert "not a complete case" in r.stdout  # an SC and a REG are no case to run
        got.update(_by_instance(out))
    assert set(got) == set(sent)
    for uid, ds in sent.items():
        assert got[uid] == ds  # every element, pixel data included
        assert got[uid].file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@needs_orthanc
def test_a_case_fetched_from_orthanc_runs_end_to_end(orthanc, tmp_path):
    """Send one run, the clip and the dose report; fetch the study; ``run`` the folder.

    Landmarks are not in an archive: the sample's, for this run, are placed beside the
    fetched files under the names ``run`` looks for.
    """
    case = sample_case()
    files = [case / n for n in ("fluoro_run02_confirm_lateral.dcm", "us_clip.dcm", "rdsr.dcm")]
    r = _pacs("send", *map(str, files), "--to", orthanc, "--called-aet", "ORTHANC")
    assert r.exit_code == 0, r.output
    fetched = tmp_path / "case"
    r = _pacs("get", "--study", _study_uid(files[0]), "--from", orthanc, "--out", str(fetched))
    assert r.exit_code == 0, r.output
    assert "a case: 1 fluoroscopy, 1 ultrasound, dose report yes" in r.stdout
    originals = _by_instance(case)
    for uid, ds in _by_instance(fetched).items():
        assert ds == originals[uid]  # the JPEG clip too: kept as stored, not transcoded
    (fluoro,) = fetched.glob("XA_*.dcm")
    (fetched / "landmarks").mkdir()
    for csv in (case / "landmarks").glob("run02_confirm_lateral_*.csv"):
        suffix = csv.name.removeprefix("run02_confirm_lateral")
        shutil.copy(csv, fetched / "landmarks" / f"{fluoro.stem}{suffix}")
    out = tmp_path / "results"
    r = CliRunner().invoke(cli, ["-q", "run", str(fetched), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["status"] == "ok"
    assert summary["dose"]["dap_total_gy_cm2"] is not None
    assert (out / "fusion").is_dir() and any((out / "fusion").rglob("fused_sc.dcm"))


@needs_orthanc
def test_c_move_fetches_the_study_too(orthanc_server, tmp_path):
    """With --move-port, Orthanc sends the study to our AE title at that port."""
    orthanc, move_port = orthanc_server
    files = [sample_case() / n for n in ("us_clip.dcm", "rdsr.dcm")]
    r = _pacs("send", *map(str, files), "--to", orthanc, "--called-aet", "ORTHANC")
    assert r.exit_code == 0, r.output
    out = tmp_path / "moved"
    study = _study_uid(files[0])
    args = ["--study", study, "--from", orthanc, "--move-port", str(move_port), "--out", str(out)]
    r = _pacs("get", *args, "--called-aet", "ORTHANC", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["case"]["ultrasound"]
    originals = _by_instance(sample_case())
    moved = _by_instance(out)
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} <= set(moved)
    for uid, ds in moved.items():
        assert ds == originals[uid]


def test_closed_port_is_one_line_and_exit_3(tmp_path):
    port = _free_port()  # nothing listens there
    r = _pacs("echo", "--to", f"127.0.0.1:{port}")
    assert r.exit_code == 3
    assert "connection refused" in _one_error_line(r)


@needs_orthanc
def test_a_called_aet_orthanc_refuses_is_exit_4(strict_orthanc):
    r = _pacs("echo", "--to", strict_orthanc, "--called-aet", "NOTORTHANC")
    assert r.exit_code == 4
    line = _one_error_line(r)
    assert "rejected" in line and "NOTORTHANC" in line


@needs_orthanc
def test_a_calling_aet_orthanc_does_not_know_is_exit_4(orthanc, tmp_path):
    """Orthanc aborts a C-FIND from an AE title not in its DicomModalities."""
    args = [
        "--study",
        "1.2.3",
        "--from",
        orthanc,
        "--aet",
        "STRANGER",
        "--out",
        str(tmp_path / "c"),
    ]
    r = _pacs("get", *args)
    assert r.exit_code == 4
    assert "aborted during C-FIND" in _one_error_line(r) and "--aet STRANGER" in r.stderr
    assert list(tmp_path.iterdir()) == []


@needs_orthanc
def test_a_refused_instance_is_exit_5_naming_the_file(strict_orthanc):
    """Orthanc answers 0xA700 (out of resources) to an instance over its storage limit."""
    big = sample_case() / "fluoro_run02_confirm_lateral.dcm"
    assert big.stat().st_size > STRICT_STORAGE_MB * 2**20
    small = sample_case() / "rdsr.dcm"
    r = _pacs("send", str(big), str(small), "--to", strict_orthanc, "--called-aet", "ORTHANC")
    assert r.exit_code == 5
    line = _one_error_line(r)
    assert f"1 of 2 file(s) refused; first {big}: C-STORE status 0xA700" in line
    assert "rdsr.dcm (X-Ray Radiation Dose SR Storage, 0x0000)" in r.stderr  # the rest went


@needs_orthanc
def test_an_unknown_study_is_exit_5_and_writes_nothing(orthanc, tmp_path):
    out = tmp_path / "case"
    r = _pacs("get", "--study", "1.2.3.4.5", "--from", orthanc, "--out", str(out))
    assert r.exit_code == 5
    assert "no study 1.2.3.4.5" in _one_error_line(r)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@contextmanager
def _silent_server():
    """A TCP server that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_no_answer_within_timeout_is_exit_6():
    with _silent_server() as address:
        start = time.monotonic()
        r = _pacs("echo", "--to", address, "--timeout", "0.5")
        elapsed = time.monotonic() - start
    assert r.exit_code == 6
    assert "within 0.5 s" in _one_error_line(r)
    assert elapsed < 10  # the timeout was applied, not pynetdicom's defaults


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["echo", "--to", "localhost"], "--to 'localhost': expected HOST:PORT"),
        (["echo", "--to", "localhost:70000"], "outside 1-65535"),
        (["echo", "--to", "localhost:104", "--aet", "A" * 17], "--aet"),
        (["get", "--study", "1.2.x", "--from", "h:104", "--out", "o"], "--study '1.2.x'"),
    ],
)
def test_bad_options_are_exit_2(args, expected):
    r = _pacs(*args)
    assert r.exit_code == 2
    assert expected in _one_error_line(r)


def test_an_unreadable_file_stops_send_before_any_network(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("not DICOM")
    closed = f"127.0.0.1:{_free_port()}"  # a network attempt would be exit 3
    r = _pacs("send", str(sample_case() / "rdsr.dcm"), str(bad), "--to", closed)
    assert r.exit_code == 2
    assert f"{bad}: not a DICOM file" in _one_error_line(r)
