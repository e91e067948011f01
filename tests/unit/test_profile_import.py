"""Parsing profile CSV files: every bad row is reported with its line, good rows still load."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.connectors.scheduling.profile_import import parse_profiles_csv


def test_good_rows_load_and_bad_rows_are_explained() -> None:
    parsed = parse_profiles_csv(
        "\ufeffEmail,ID,Name\n"
        "ada@EXAMPLE.edu,p1,Ada Byron\n"
        "x@example.edu,p2,\n"
        "not-an-email,p3,Grace\n"
        "\n"
        "dup@example.edu,p1,Dup\n"
        ",p4,Alan\n"
    )
    assert parsed.profiles == [
        Profile("p1", "Ada Byron", "ada@example.edu"),
        Profile("p4", "Alan", None),
    ]
    assert [str(e) for e in parsed.errors] == [
        "line 3: profile p2 has no name",
        "line 4: profile p3: 'not-an-email' is not an email address",
        "line 6: profile p1 already appeared on line 2",
    ]


def test_header_problems() -> None:
    assert (
        str(parse_profiles_csv("").errors[0])
        == "line 1: the file is empty; expected a header: id,name,email"
    )
    assert "lacks name" in str(parse_profiles_csv("id,email\n1,a@b.cd\n").errors[0])


cells = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20
)


@given(st.lists(st.tuples(cells, cells, cells), max_size=15))
def test_any_rows_are_either_loaded_or_reported(rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "name", "email"])
    writer.writerows(rows)
    parsed = parse_profiles_csv(buffer.getvalue())
    assert len({p.id for p in parsed.profiles}) == len(parsed.profiles)
    assert all(p.id and p.name for p in parsed.profiles)
    assert all(error.line >= 2 for error in parsed.errors)
    non_blank = [row for row in rows if any(cell.strip() for cell in row)]
    assert len(parsed.profiles) + len(parsed.errors) == len(non_blank), "no row may vanish"


@given(st.text(max_size=300))
def test_any_text_after_the_header_is_loaded_or_reported_never_raised(text: str) -> None:
    parsed = parse_profiles_csv("id,name,email\n" + text)
    assert all(profile.id for profile in parsed.profiles)
