"""A generated parallel corpus: dates written in many human formats, translated to ISO 8601.

Every source format is unambiguous: slashes are always month/day/two-digit year (US order),
dots always day.month.year (European order), and the years span at most a century, so a
two-digit year names one year (with the default 1950-2049, `21` is 2021 and `87` is 1987):
every source has exactly one correct target.
The corpus is a pure function of (examples, first_year, last_year, seed): the same arguments
always give the same pairs in the same order, on any machine (no locale, no clock).

    >>> render_date(datetime.date(2021, 3, 3), "ordinal_lower")
    'march 3rd, 2021'
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import numpy as np

from kerasops.data.errors import DataError

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def ordinal(day: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _month(d: datetime.date) -> str:
    return MONTHS[d.month - 1]


# Format name -> renderer. The ISO format is a source too: copying it is already right.
FORMATS: dict[str, Callable[[datetime.date], str]] = {
    "day_month_year": lambda d: f"{d.day} {_month(d)} {d.year}",  # 3 March 2021
    "month_day_year": lambda d: f"{_month(d)} {d.day}, {d.year}",  # March 3, 2021
    "ordinal_lower": lambda d: f"{_month(d).lower()} {ordinal(d.day)}, {d.year}",
    "us_slashes": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",  # 03/03/21
    "european_dots": lambda d: f"{d.day}.{d.month}.{d.year}",  # 3.3.2021
    "weekday_long": lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day} {_month(d)} {d.year}",
    "weekday_short": lambda d: f"{WEEKDAYS[d.weekday()][:3]}, {_month(d)[:3]} {d.day}, {d.year}",
    "military": lambda d: f"{d.day:02d} {_month(d)[:3].upper()} {d.year}",  # 03 MAR 2021
    "ordinal_of": lambda d: f"{ordinal(d.day)} of {_month(d)} {d.year}",  # 3rd of March 2021
    "compact": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",  # 20210303
    "iso": lambda d: d.isoformat(),  # 2021-03-03
}


def render_date(date: datetime.date, format_name: str) -> str:
    """`date` written in the format `format_name` (a key of FORMATS)."""
    return FORMATS[format_name](date)


def generate_date_pairs(
    examples: int, first_year: int, last_year: int, seed: int
) -> list[tuple[str, str, str]]:
    """`examples` distinct (source, target, format name) triples, drawn without replacement
    from every (date, format) pair of the years; raise DataError when there are too few."""
    if not 1 <= first_year <= last_year <= 9999:
        raise DataError(
            f"years must satisfy 1 <= first_year <= last_year <= 9999; got "
            f"{first_year}..{last_year}"
        )
    if last_year - first_year >= 100:
        raise DataError(
            "first_year..last_year spans more than 100 years, so two-digit years (03/03/21) "
            "would be ambiguous; narrow the range"
        )
    start = datetime.date(first_year, 1, 1)
    days = (datetime.date(last_year, 12, 31) - start).days + 1
    names = sorted(FORMATS)
    total = days * len(names)
    if not 1 <= examples <= total:
        raise DataError(f"examples must be in 1..{total} for these years, got {examples}")
    chosen = np.random.default_rng(seed).choice(total, size=examples, replace=False)
    pairs = []
    for index in chosen.tolist():
        date = start + datetime.timedelta(days=index // len(names))
        name = names[index % len(names)]
        pairs.append((render_date(date, name), date.isoformat(), name))
    return pairs
