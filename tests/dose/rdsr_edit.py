"""Edits of an RDSR's content tree shared by the dose and CLI tests."""

from __future__ import annotations

import datetime as dt


def shift_datetimes(items, days: int) -> None:
    """Move every DATETIME content item (event starts, start and end of the study)."""
    for item in items:
        if item.get("ValueType") == "DATETIME":
            when = dt.datetime.strptime(item.DateTime[:14], "%Y%m%d%H%M%S")
            item.DateTime = f"{when + dt.timedelta(days=days):%Y%m%d%H%M%S}.000000"
        if "ContentSequence" in item:
            shift_datetimes(item.ContentSequence, days)
