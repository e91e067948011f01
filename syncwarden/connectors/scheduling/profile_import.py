"""Reading scheduling profiles from a CSV export, row by row, with a reason for every rejected row.

The file needs a header naming at least ``id`` and ``name`` (``email`` is optional but is what
requests are matched on); column names are case-insensitive and may be in any order. Bad rows do
not stop the import: each gets a line in the report, so a file with one typo still loads the rest.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from syncwarden.connectors.scheduling.ports import Profile

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
REQUIRED_COLUMNS = ("id", "name")


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ParsedProfiles:
    profiles: list[Profile]
    errors: list[RowError]


def parse_profiles_csv(text: str) -> ParsedProfiles:
    # newline="" lets the csv module see \r and \r\n itself (quoted fields may hold them).
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader)
    except csv.Error as error:
        return ParsedProfiles([], [RowError(1, f"the file is not valid CSV ({error})")])
    except StopIteration:
        return ParsedProfiles(
            [], [RowError(1, "the file is empty; expected a header: id,name,email")]
        )
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        return ParsedProfiles(
            [], [RowError(1, f"the header lacks {', '.join(missing)}; expected id,name,email")]
        )
    profiles: list[Profile] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for row in _rows(reader, errors):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row: list[str] = row) -> str:
            index = columns.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        profile_id, name, email = cell("id"), cell("name"), cell("email")
        if not profile_id:
            errors.append(RowError(line, "no id"))
        elif len(profile_id) > 128:
            errors.append(RowError(line, "the id is longer than 128 characters"))
        elif not name:
            errors.append(RowError(line, f"profile {profile_id} has no name"))
        elif email and not _EMAIL.match(email):
            errors.append(
                RowError(line, f"profile {profile_id}: '{email}' is not an email address")
            )
        elif profile_id in seen:
            errors.append(
                RowError(line, f"profile {profile_id} already appeared on line {seen[profile_id]}")
            )
        else:
            seen[profile_id] = line
            profiles.append(Profile(profile_id, name[:256], email.lower() or None))
    return ParsedProfiles(profiles, errors)


def _rows(reader: Iterator[list[str]], errors: list[RowError]) -> Iterator[list[str]]:
    """The reader's rows, ending with one error instead of an exception on malformed CSV."""
    try:
        yield from reader
    except csv.Error as error:
        errors.append(RowError(getattr(reader, "line_num", 0), f"not valid CSV ({error})"))
