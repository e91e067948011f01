"""Ids and addresses as Graph URL path segments.

Every Graph path we build from a value (``users/{id or UPN}/events/{event id}``, ``groups/{id}``,
``subscriptions/{id}``, ...) takes the value through :func:`segment`, so that whatever the value
holds, it names one segment and nothing else: a ``/`` cannot add a segment, ``..`` cannot climb
to another resource, ``?`` cannot start a query, ``#`` cannot cut the rest of the URL off (a
guest's UPN, ``name_example.com#EXT#@tenant``, must be sent as ``%23EXT%23``, as Microsoft's "Get
a user" page says), and NUL or a space cannot make the HTTP client refuse the URL.

Which characters are encoded: everything that cannot stand in a path segment as it is (RFC 3986
section 3.3: a ``pchar`` is an unreserved character, a sub-delimiter ``!$&'()*+,;=``, ``:`` or
``@``), and ``%`` itself. The characters a ``pchar`` allows are left alone, ``@`` included: they
mean the same encoded or not, and leaving them means every id that was already a valid segment
(Graph's own ids, base64 with ``=`` padding; UPNs with ``@``) goes out byte for byte as before.
Graph accepts ``user@example.edu`` and ``user%40example.edu`` alike, but whether it decodes
``%3D`` inside ``$batch`` item URLs is not published, and the sandbox tenant's ``$batch`` does
not decode item URLs at all; an unencoded ``=`` works in both places.

Graph itself splits a segment at an encoded ``%2F`` (an Outlook item id with ``/`` from the
Office JavaScript API must be translated first); such an id still gets a valid URL here, and
Graph's answer (400 or 404) is the caller's to handle.
"""

from __future__ import annotations

from urllib.parse import quote

from syncwarden.connectors.errors import NotFoundError

# RFC 3986 pchar, less the unreserved characters quote() never encodes.
_SAFE_IN_SEGMENT = "!$&'()*+,;=:@"
# Segments that URL normalisation (ours, a proxy's or Graph's) removes or resolves.
_DOT_SEGMENTS = frozenset({"", ".", ".."})


class UnaddressableIdError(NotFoundError):
    """No Graph object can have this id: it cannot be sent as one path segment.

    A :class:`NotFoundError` because that is what it means to every caller (no such person,
    group or event), raised before any request is sent: the empty id would name the whole
    collection, ``.`` and ``..`` are removed by URL normalisation, and text that is not Unicode
    (a lone surrogate) has no UTF-8 form to percent-encode.
    """


def segment(value: str) -> str:
    """``value`` as one URL path segment: percent-encoded so that it decodes back to ``value``.

    Raises :class:`UnaddressableIdError` for a value no segment can carry.
    """
    if value in _DOT_SEGMENTS:
        raise UnaddressableIdError(f"no Graph object can have the id {_shown(value)}")
    try:
        return quote(value, safe=_SAFE_IN_SEGMENT, errors="strict")
    except UnicodeEncodeError:
        raise UnaddressableIdError(
            f"no Graph object can have the id {_shown(value)}: it is not valid Unicode text"
        ) from None


def _shown(value: str) -> str:
    """The id for an error message: quoted, escaped and short (it may be anything)."""
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."
