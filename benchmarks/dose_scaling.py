"""Time and peak memory of ``dose report`` on a dose report with many irradiation events.

Usage: ``python -m benchmarks.dose_scaling RDSR N [--us-interval A,B]``, where RDSR is a
synthetic dose report (``hybridfuse synth``) whose events are repeated to N events,
each a few seconds after the last. Prints seconds and peak RSS of one ``dose report``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._header import print_header


def many_events(rdsr: Path, n: int, out: Path) -> Path:
    """``rdsr`` with its event containers repeated to ``n`` events, 4 s apart."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(rdsr)
    items = list(ds.ContentSequence)
    events = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "113706"]
    others = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue != "113706"]
    t0 = _dt.datetime(2026, 1, 15, 9, 0, 0)
    made = []
    for k in range(n):
        ev = copy.deepcopy(events[k % len(events)])
        for child in ev.ContentSequence:
            code = child.ConceptNameCodeSequence[0].CodeValue
            if code == "111526":  # DateTime Started
                child.DateTime = (t0 + _dt.timedelta(seconds=4 * k)).strftime("%Y%m%d%H%M%S")
            elif code == "113769":  # Irradiation Event UID
                child.UID = generate_uid()
        made.append(ev)
    ds.ContentSequence = others + made
    ds.save_as(out)
    return out


def main(argv: list[str]) -> None:
    rdsr, n, extra = Path(argv[0]), int(argv[1]), argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        big = many_events(rdsr, n, Path(tmp) / "big.dcm")
        cmd = [
            sys.executable,
            "-c",
            "from hybridfuse.cli.main import main; main()",
            "dose",
            "report",
        ]
        cmd += ["--rdsr", str(big)]
        cmd += ["--out", str(Path(tmp) / "out"), *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"events={n} exit={proc.returncode} seconds={seconds:.1f} peak_rss_mib={peak_mib:.0f}"
        )
        if proc.returncode:
            print(proc.stdout, proc.stderr)


if __name__ == "__main__":
    print_header()
    main(sys.argv[1:])
