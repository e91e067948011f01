"""Pure parts of the directory and credential connectors: OData quoting, kinds, addresses, certs."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.errors import CredentialError
from syncwarden.connectors.graph.applications import CredentialKind, credentials_from_graph
from syncwarden.connectors.graph.directory import classify_group, user_from_graph
from syncwarden.connectors.graph.odata import address_filter, quote
from syncwarden.connectors.ports import GroupKind
from syncwarden.connectors.tokens import load_certificate
from tests.support.certificates import make_certificate


def unquote(literal: str) -> str:
    assert literal.startswith("'") and literal.endswith("'")
    inner = literal[1:-1]
    assert re.fullmatch(r"(?:[^']|'')*", inner), "a lone quote would end the literal early"
    return inner.replace("''", "'")


@given(st.text(max_size=60))
def test_quoting_round_trips_any_text(value: str) -> None:
    assert unquote(quote(value)) == value


def test_address_filter_covers_every_address_form() -> None:
    text = address_filter("o'brien@example.edu")
    assert "userPrincipalName eq 'o''brien@example.edu'" in text
    assert "mail eq 'o''brien@example.edu'" in text
    assert "proxyAddresses/any(p:p eq 'SMTP:o''brien@example.edu')" in text
    assert "proxyAddresses/any(p:p eq 'smtp:o''brien@example.edu')" in text
    assert "otherMails/any(o:o eq 'o''brien@example.edu')" in text


@pytest.mark.parametrize(
    ("types", "mail", "security", "kind"),
    [
        ([], False, True, GroupKind.SECURITY),
        (["Unified"], True, False, GroupKind.MICROSOFT_365),
        ([], True, True, GroupKind.MAIL_ENABLED_SECURITY),
        ([], True, False, GroupKind.DISTRIBUTION),
        (["DynamicMembership"], False, True, GroupKind.SECURITY),
    ],
)
def test_group_kind(types: list[str], mail: bool, security: bool, kind: GroupKind) -> None:
    assert classify_group(types, mail, security) is kind
    assert kind.writable_through_graph is (kind in (GroupKind.SECURITY, GroupKind.MICROSOFT_365))


def test_user_addresses_and_primary_smtp() -> None:
    user = user_from_graph(
        {
            "id": "u1",
            "displayName": "Grace Hopper",
            "userPrincipalName": "grace.hopper@example.edu",
            "mail": "grace.hopper@example.edu",
            "accountEnabled": True,
            "proxyAddresses": ["smtp:ghopper@staff.example.edu", "SMTP:Grace.Hopper@example.edu"],
            "otherMails": ["grace@example.org"],
        }
    )
    assert user.primary_smtp == "Grace.Hopper@example.edu"
    for address in ("GHOPPER@staff.example.edu", "grace@example.org", "grace.hopper@example.edu"):
        assert user.owns_address(address)
    assert not user.owns_address("someone.else@example.edu")


def test_mailbox_addresses_are_the_primary_and_smtp_proxies_only() -> None:
    """Exchange delivers to the SMTP proxy addresses; otherMails and other proxy types (X500,
    SIP) are not mailbox addresses (Graph user resource: proxyAddresses, otherMails)."""
    user = user_from_graph(
        {
            "id": "u1",
            "displayName": "Grace Hopper",
            "userPrincipalName": "grace.hopper@example.edu",
            "mail": "grace.hopper@example.edu",
            "accountEnabled": True,
            "proxyAddresses": [
                "smtp:ghopper@staff.example.edu",
                "SIP:grace.hopper@example.edu",
                "X500:/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=abc",
                "SMTP:Grace.Hopper@example.edu",
                "smtp:GHOPPER@staff.example.edu",
            ],
            "otherMails": ["grace@example.org"],
        }
    )
    assert user.mailbox_addresses == ("Grace.Hopper@example.edu", "ghopper@staff.example.edu")
    assert user.mailbox_address("GHOPPER@STAFF.example.edu ") == "ghopper@staff.example.edu"
    assert user.mailbox_address("grace@example.org") is None


@given(st.lists(st.text(max_size=30), max_size=6), st.lists(st.text(max_size=30), max_size=3))
def test_mailbox_addresses_never_include_outside_addresses(
    proxies: list[str], others: list[str]
) -> None:
    user = user_from_graph(
        {
            "id": "u1",
            "displayName": "X",
            "userPrincipalName": "x@example.edu",
            "mail": None,
            "accountEnabled": True,
            "proxyAddresses": proxies,
            "otherMails": others,
        }
    )
    smtp = {p[5:].lower() for p in proxies if p[:5].lower() == "smtp:"}
    assert all(a.lower() in smtp for a in user.mailbox_addresses)
    assert len({a.lower() for a in user.mailbox_addresses}) == len(user.mailbox_addresses)


def test_credentials_from_graph_reads_secrets_and_certificates() -> None:
    found = credentials_from_graph(
        {
            "passwordCredentials": [
                {
                    "keyId": "k1",
                    "displayName": "prod",
                    "hint": "abc",
                    "endDateTime": "2027-01-31T10:00:00Z",
                }
            ],
            "keyCredentials": [
                {
                    "keyId": "k2",
                    "customKeyIdentifier": "THUMB",
                    "usage": "Verify",
                    "endDateTime": "bad",
                }
            ],
        }
    )
    secret, certificate = found
    assert secret.kind is CredentialKind.SECRET and secret.hint == "abc"
    assert secret.end == dt.datetime(2027, 1, 31, 10, tzinfo=dt.UTC)
    assert certificate.kind is CredentialKind.CERTIFICATE and certificate.thumbprint == "THUMB"
    assert certificate.end is None


def test_pem_and_pfx_certificates_load_with_the_same_thumbprint(tmp_path: Path) -> None:
    key, cert = make_certificate()
    pem = tmp_path / "graph.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    pfx = tmp_path / "graph.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"graph", key, cert, None, serialization.BestAvailableEncryption(b"pw")
        )
    )
    from_pem = load_certificate(pem, "pw")
    from_pfx = load_certificate(pfx, "pw")
    expected = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the thumbprint format
    assert from_pem.thumbprint_sha1 == from_pfx.thumbprint_sha1 == expected
    assert from_pem.for_msal()["private_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_wrong_certificate_password_is_a_clear_credential_error(tmp_path: Path) -> None:
    key, cert = make_certificate()
    pfx = tmp_path / "graph.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"graph", key, cert, None, serialization.BestAvailableEncryption(b"right")
        )
    )
    with pytest.raises(CredentialError, match="cannot read the certificate"):
        load_certificate(pfx, "wrong")
