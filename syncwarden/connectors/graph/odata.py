"""Building OData query values safely.

Values placed inside a ``$filter`` are quoted here and nowhere else: a single quote in an address
(legal in the local part, e.g. ``o'brien@example.edu``) must be doubled, or the filter breaks or,
worse, means something else.
"""

from __future__ import annotations


def quote(value: str) -> str:
    """An OData string literal for ``value``."""
    return "'" + value.replace("'", "''") + "'"


def address_filter(address: str) -> str:
    """Match a user by any of their addresses: UPN, mail, primary or secondary SMTP, other mails.

    Both ``SMTP:`` (primary) and ``smtp:`` (secondary) proxy forms are listed because whether Graph
    compares the prefix case-insensitively is not documented.
    """
    return " or ".join(
        [
            f"userPrincipalName eq {quote(address)}",
            f"mail eq {quote(address)}",
            f"proxyAddresses/any(p:p eq {quote('SMTP:' + address)})",
            f"proxyAddresses/any(p:p eq {quote('smtp:' + address)})",
            f"otherMails/any(o:o eq {quote(address)})",
        ]
    )
