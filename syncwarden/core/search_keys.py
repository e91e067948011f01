"""Names and addresses folded for sorting and searching, the same way in Python and in SQL.

The users and tickets lists sort and find people by a *search key* stored beside the text it
comes from (``name_key`` beside ``subject_name``, …): one function makes the stored keys (the
models and the migration that filled them) and the keys queries compare with.
"""

from __future__ import annotations

import unicodedata


def search_key(text: str, longest: int) -> str:
    """A name or address as the lists sort and search it: case and accents folded, spaces
    collapsed, characters nobody can type (controls, format marks, lone surrogates) dropped.

    Stored beside the text it comes from (``name_key`` beside ``subject_name``, …) and compared
    in code-point order (PostgreSQL's "C" collation, SQLite's default), so a prefix is a range
    that a plain btree index serves on both backends and in any database locale, and ordering,
    searching and page cursors agree byte for byte with Python's. SQL's ``lower()`` could not do
    that: PostgreSQL folds case by the database's locale ("C" folds only ASCII), and a prefix
    ``LIKE`` uses an index only in the "C" collation.
    """
    # Unicode's compatibility caseless matching (NFKD, casefold, NFKD), then without accents.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    bare = unicodedata.normalize("NFC", "".join(c for c in folded if not unicodedata.combining(c)))
    typed = "".join(c if c.isprintable() else " " for c in bare)
    return " ".join(typed.split())[:longest].rstrip()
