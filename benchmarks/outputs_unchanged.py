"""Compare the JSON outputs of a fixed set of commands before and after a refactor.

``python benchmarks/outputs_unchanged.py write DIR`` runs the commands and keeps their
JSON outputs with timings, versions and paths removed; ``... compare DIR`` runs them again
and lists every value that differs. The commands use the committed sample case and two
synthetic cases, so the comparison is deterministic on one machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "testdata" / "sample" / "lumbar-mbb-seed1"

#: Keys whose values change from run to run (timings, version) and say nothing of results.
VOLATILE = {
    "wall_time_s",
    "frames_per_second",
    "fuse_and_write_s",
    "io_s",
    "registration_s",
    "fusion_s",
    "dose_s",
    "software_version",
    "version",
}


#: {label: (exit code, last error line)} of the commands run, compared like the outputs.
EXITS: dict[str, list] = {}


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-c", "from hybridfuse.cli.main import main; main()"]
    probe = subprocess.run(
        [sys.executable, "-c", "import hybridfuse.cli.main"], check=False, capture_output=True
    )
    if probe.returncode != 0:  # the layout before the package was named hybridfuse
        cmd = [sys.executable, "-c", "from cli.main import main; main()"]
    proc = subprocess.run(
        [*cmd, "-q", *args], check=False, cwd=ROOT, capture_output=True, text=True
    )
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    EXITS[f"{len(EXITS):02d} {args[0]}"] = [proc.returncode, last]


def _commands(work: Path) -> dict[str, Path]:
    """Run the commands; return {label: output folder}."""
    outs = {}
    outs["demo"] = work / "demo"
    _cli("demo", "--out", str(outs["demo"]))
    for seed, extra in ((3, []), (5, ["--metric", "ncc", "--model", "affine"])):
        case = work / f"synth{seed}"
        _cli("synth", "--out", str(case), "--seed", str(seed))
        outs[f"run{seed}"] = work / f"run{seed}"
        _cli("run", str(case), "--out", str(outs[f"run{seed}"]), "--video", "none", *extra)
    pair = ["--fixed", str(SAMPLE / "fluoro_run02_confirm_lateral.dcm")]
    pair += ["--moving", str(SAMPLE / "us_clip.dcm")]
    registrations = {
        "register": [
            "--moving-frame", "6",
            "--landmarks", str(SAMPLE / "landmarks" / "run02_confirm_lateral_f00_us06.csv"),
            "--truth", str(SAMPLE / "truth.json"),
        ],
        "register_search": [
            "--moving-frame", "6", "--metric", "mi", "--search",
            "--init", "moments", "--plane-faces-detector",
        ],
        "register_init": [
            "--moving-frame", "7", "--metric", "ncc", "--model", "similarity",
            "--init-transform", str(work / "register" / "transform.json"),
        ],
    }  # fmt: skip
    for label, extra in registrations.items():  # in order: the last starts from the first
        outs[label] = work / label
        _cli("register", *pair, *extra, "--out", str(outs[label]))
    outs["dose"] = work / "dose"
    _cli(
        "dose", "report", "--rdsr", str(SAMPLE / "rdsr.dcm"), "--us", str(SAMPLE / "us_clip.dcm"),
        "--procedure", "lumbar medial branch block", "--region", "lumbar",
        "--out", str(outs["dose"]),
    )  # fmt: skip
    outs["images"] = work / "images"
    _cli(
        "dose", "report", "--out", str(outs["images"]),
        *[a for f in sorted(SAMPLE.glob("fluoro_*.dcm")) for a in ("--images", str(f))],
    )  # fmt: skip
    return outs


def _strip(value, work: str):
    if isinstance(value, dict):
        return {k: _strip(v, work) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v, work) for v in value]
    if isinstance(value, str):  # paths differ between checkouts, not between versions
        return value.replace(work, "<work>").replace(str(ROOT), "<root>")
    return value


def collect() -> dict:
    """Run the commands in a temporary folder; return {label/file: stripped JSON}."""
    work = Path(tempfile.mkdtemp(prefix="hybridfuse-unchanged-"))
    try:
        result = {}
        for label, out in _commands(work).items():
            for path in sorted(out.rglob("*.json")):
                data = json.loads(path.read_text())
                result[f"{label}/{path.relative_to(out)}"] = _strip(data, str(work))
        result["exits"] = _strip(EXITS, str(work))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k in b else 'before'}")
            else:
                _diff(a[k], b[k], f"{where}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b:
        out.append(f"{where}: {a!r} -> {b!r}")


def main(argv: list[str]) -> int:
    """Entry point: ``write DIR`` or ``compare DIR``."""
    if len(argv) != 2 or argv[0] not in ("write", "compare"):
        print(__doc__)
        return 2
    target = Path(argv[1]) / "outputs.json"
    now = collect()
    if argv[0] == "write":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(now, indent=1, sort_keys=True))
        print(f"wrote {len(now)} outputs to {target}")
        return 0
    before = json.loads(target.read_text())
    diffs: list[str] = []
    _diff(before, now, "", diffs)
    for line in diffs:
        print(line)
    print(f"{len(now)} outputs compared, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
