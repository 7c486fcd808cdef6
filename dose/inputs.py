"""How written dose outputs name their input files: by role, position and sha256.

Sites often name files after the patient (``SMITH_JOHN_20261130.dcm``), so dose.json,
report.html and the registry name an input by what it is, its place among the inputs of
that kind and the first 12 hex digits of its sha256 (``image 2 (sha256 3f2a9c0d1e4b)``):
no patient data, and a physicist finds the file by hashing. The file name and path only
with ``--include-phi``. Messages to the user's own terminal name files as given.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

# The label is the whole project's (fusion outputs name their inputs the same way).
from hybridfuse._safeio import file_record, input_label, recorded_name

__all__ = ["drop_names", "drop_paths", "input_label", "input_record", "shown_name"]


def input_record(
    path: str | os.PathLike,
    *,
    role: str,
    include_phi: bool,
    position: int | None = None,
    sha256: str | None = None,
) -> dict:
    """``input`` (its label) and ``sha256``; ``file`` and ``path`` only with ``include_phi``."""
    return file_record(path, include_phi=include_phi, sha256=sha256, role=role, position=position)


#: What flags and tables call an input: its file name when kept, else its label.
shown_name = recorded_name


def _label_of(item, role: str, position: int | None = None) -> str:
    """An input's label as recorded; computed for a dose.json from before labels."""
    item = item if isinstance(item, dict) else {}
    if item.get("input"):
        return str(item["input"])
    sha = item.get("sha256")
    if isinstance(sha, str) and sha:
        return input_label(sha, role, position)
    return role if position is None else f"{role} {position}"


def _input_items(record: dict):
    """(record of an input, its label) for every input a dose.json names."""
    inputs = [i for i in record.get("inputs") or [] if isinstance(i, dict)]
    for n, item in enumerate(inputs, 1):
        yield item, _label_of(item, "input", n)
    per_image = (record.get("delivered") or {}).get("per_image")
    for n, item in enumerate(per_image if isinstance(per_image, list) else [], 1):
        # per_image[n] is the image of inputs[n]: the same label.
        yield item, _label_of(inputs[n - 1], "input", n) if n <= len(inputs) else f"image {n}"
    clips = ((record.get("saved") or {}).get("counterfactual") or {}).get("clips")
    for n, item in enumerate(clips if isinstance(clips, list) else [], 1):
        yield item, _label_of(item, "clip", n)
    yield record.get("corrections"), _label_of(record.get("corrections"), "corrections")


def drop_paths(record: dict) -> dict:
    """A copy of a dose.json record naming its input files by name, never by path."""
    record = copy.deepcopy(record)
    for item, _ in _input_items(record):
        if isinstance(item, dict):
            path = item.pop("path", None)
            if isinstance(item.get("file") or path, str):
                item["file"] = Path(item.get("file") or path).name
    return record


def drop_names(record: dict) -> dict:
    """A copy of a dose.json record naming no input file (for one written with PHI).

    Every input's ``file`` and ``path`` are dropped for its label; a text (a flag, an
    interval's source) that names a file before a colon, as ours do, names its label.
    """
    record = copy.deepcopy(record)
    names: dict[str, str] = {}
    for item, label in _input_items(record):
        if not isinstance(item, dict):
            continue
        for key in ("file", "path"):
            value = item.pop(key, None)
            if isinstance(value, str) and value:
                names[value] = names[Path(value).name] = label
        item["input"] = label
    names.update({n: label for n, label in _old_clip_names(record).items() if n not in names})
    if not names:
        return record
    # Longest first, so a full path is replaced before the name it ends with.
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\S)({alternatives})(?=:)")
    return _replace_texts(record, lambda s: pattern.sub(lambda m: names[m.group(1)], s))


def _old_clip_names(record: dict) -> dict[str, str]:
    """Clip file names a dose.json from before labels gives only in its intervals' sources.

    It had no ``clips`` list: an interval's source (``NAME: first frame to last ...``) is
    the only record of the clip's name, which its flags repeat. ``clip N`` in order.
    """
    cf = (record.get("saved") or {}).get("counterfactual") or {}
    if not isinstance(cf, dict) or isinstance(cf.get("clips"), list):
        return {}
    ivs = cf.get("us_guided_intervals_s")
    sources = [iv.get("source") for iv in ivs or [] if isinstance(iv, dict)]
    found = [s.split(": ")[0] for s in sources if isinstance(s, str) and ": " in s]
    return {name: f"clip {n}" for n, name in enumerate(dict.fromkeys(found), 1)}


def _replace_texts(value, fix):
    # A dose record is a few levels deep: recursion is bounded by construction.
    if isinstance(value, dict):
        return {k: _replace_texts(v, fix) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_texts(v, fix) for v in value]
    return fix(value) if isinstance(value, str) else value
