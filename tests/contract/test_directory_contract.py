"""Users, directory queries and app credentials: what Graph does, each with where it is published.

Sources used here, all in Microsoft's Graph docs (learn.microsoft.com/graph, repository
microsoftgraph/microsoft-graph-docs-contrib) unless a test names a public issue or client code:
user-get, user-list, aad-advanced-queries (and its filter table include
``includes/filter-directory-objects.md``), filter-query-parameter, application-list,
passwordCredential and keyCredential resources.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from syncwarden.connectors.graph.applications import CREDENTIAL_FIELDS
from syncwarden.connectors.graph.directory import GROUP_FIELDS, MEMBER_FIELDS, USER_FIELDS
from syncwarden.connectors.graph.odata import address_filter
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client
from tests.sandbox.conftest import TenantFactory
from tests.sandbox.test_csdl_shapes import properties

ROWAN_UPN = "rowan.ibarra@example.edu"
ROWAN_ID = "17731cc6-062e-41d8-be1d-bc82030ee38d"
ROWAN_MAIL = "rowan.ibarra@example.org"  # primary SMTP differs from the UPN
ROWAN_SECONDARY = "ribarra@example.edu"  # smtp: proxy address
ROWAN_OTHER_MAIL = "rowan.ibarra.home@example.com"  # otherMails
EVENTUAL = {"ConsistencyLevel": "eventual"}
USER_DEFAULT_PROPERTIES = {
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
}
CREDENTIAL_SELECT = "id,appId,displayName,passwordCredentials,keyCredentials"


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def upns(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(u["userPrincipalName"] for u in response.json()["value"])


# ---------------------------------------------------------------- single users


async def test_a_user_is_addressed_by_object_id_or_user_principal_name(
    graph: httpx.AsyncClient,
) -> None:
    """``GET /users/{id | userPrincipalName}`` finds a user by either key, case aside.

    Source: https://learn.microsoft.com/graph/api/user-get ("HTTP request").
    """
    by_id = await graph.get(f"/users/{ROWAN_ID}")
    by_upn = await graph.get(f"/users/{ROWAN_UPN.upper()}")
    assert by_id.status_code == by_upn.status_code == 200
    assert by_id.json()["id"] == by_upn.json()["id"] == ROWAN_ID


async def test_any_other_address_is_404_request_resource_not_found(
    graph: httpx.AsyncClient,
) -> None:
    """A user's mail or proxy address is not a key: ``GET /users/{mail}`` answers 404
    ``Request_ResourceNotFound`` "Resource '…' does not exist or one of its queried
    reference-property objects are not present.", so lookups by address must use ``$filter``.

    Sources: https://learn.microsoft.com/graph/api/user-get ("If a user with the ID doesn't
    exist, this method returns a 404"); the message as captured in
    https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/7618.
    """
    for address in (ROWAN_MAIL, ROWAN_SECONDARY, ROWAN_OTHER_MAIL):
        response = await graph.get(f"/users/{address}")
        assert response.status_code == 404, address
        error = error_of(response)
        assert error["code"] == "Request_ResourceNotFound"
        assert error["message"] == (
            f"Resource '{address}' does not exist or one of its queried reference-property "
            "objects are not present."
        )


async def test_without_select_a_user_has_the_eleven_default_properties(
    graph: httpx.AsyncClient,
) -> None:
    """Without ``$select`` a user carries only the default set: businessPhones, displayName,
    givenName, id, jobTitle, mail, mobilePhone, officeLocation, preferredLanguage, surname,
    userPrincipalName. proxyAddresses, otherMails and accountEnabled must be asked for.

    Source: https://learn.microsoft.com/graph/api/user-list ("Optional query parameters") and
    https://learn.microsoft.com/graph/api/user-get.
    """
    one = (await graph.get(f"/users/{ROWAN_ID}")).json()
    assert set(one) - {"@odata.context"} == USER_DEFAULT_PROPERTIES
    listed = (await graph.get("/users", params={"$top": "3"})).json()["value"]
    assert all(set(user) == USER_DEFAULT_PROPERTIES for user in listed)


async def test_select_returns_exactly_the_selected_properties(graph: httpx.AsyncClient) -> None:
    """``$select`` returns just those properties, and the context URL names them with
    ``/$entity`` for a single object.

    Source: https://learn.microsoft.com/graph/api/user-get (example 3, "Use $select").
    """
    response = await graph.get(
        f"/users/{ROWAN_ID}", params={"$select": "id,proxyAddresses,otherMails,accountEnabled"}
    )
    body = response.json()
    assert set(body) == {"@odata.context", "id", "proxyAddresses", "otherMails", "accountEnabled"}
    assert body["@odata.context"].endswith(
        "$metadata#users(id,proxyAddresses,otherMails,accountEnabled)/$entity"
    )


# ---------------------------------------------------------------- finding a user by address


@pytest.mark.parametrize(
    "clause",
    [
        f"userPrincipalName eq '{ROWAN_UPN}'",
        f"mail eq '{ROWAN_MAIL}'",
        f"proxyAddresses/any(p:p eq 'smtp:{ROWAN_SECONDARY}')",
        f"otherMails/any(o:o eq '{ROWAN_OTHER_MAIL}')",
    ],
)
async def test_each_address_clause_works_without_advanced_query_parameters(
    graph: httpx.AsyncClient, clause: str
) -> None:
    """``eq`` on userPrincipalName and mail, and ``any`` with ``eq`` on the proxyAddresses and
    otherMails collections, are supported by default (no ConsistencyLevel, no $count).

    Sources: the user filter table in https://learn.microsoft.com/graph/aad-advanced-queries
    (microsoft-graph-docs-contrib ``includes/filter-directory-objects.md``: eq is "Default" for
    all four); the ``any`` syntax in https://learn.microsoft.com/graph/filter-query-parameter.
    """
    response = await graph.get("/users", params={"$filter": clause, "$select": "id"})
    assert response.status_code == 200, response.text
    assert [u["id"] for u in response.json()["value"]] == [ROWAN_ID]


async def test_the_products_whole_address_filter_is_a_basic_query(
    graph: httpx.AsyncClient,
) -> None:
    """The product's lookup ORs five clauses (UPN, mail, ``SMTP:`` and ``smtp:`` proxy address,
    otherMails); every clause uses ``eq`` on a property where eq is supported by default, so
    the whole filter needs no ConsistencyLevel header and finds the person by any address.

    Sources: the user filter table of https://learn.microsoft.com/graph/aad-advanced-queries
    (``includes/filter-directory-objects.md``) and https://learn.microsoft.com/graph/api/user-list.
    """
    for address in (ROWAN_UPN, ROWAN_MAIL, ROWAN_SECONDARY, ROWAN_OTHER_MAIL):
        response = await graph.get(
            "/users",
            params={"$filter": address_filter(address), "$select": USER_FIELDS, "$top": "5"},
        )
        assert response.status_code == 200, (address, response.text)
        assert [u["id"] for u in response.json()["value"]] == [ROWAN_ID], address


async def test_the_address_lookup_compares_without_regard_to_case(
    graph: httpx.AsyncClient,
) -> None:
    """Directory string comparisons in ``$filter`` ignore case, including the ``SMTP:``/``smtp:``
    prefix of proxy addresses.

    The case rule is not published: no Microsoft page states it for proxyAddresses. The product
    survives either answer: its filter (connectors/graph/odata.py ``address_filter``) sends both the
    ``SMTP:`` and the ``smtp:`` form of the address as typed, so a case-sensitive prefix match
    still finds primary and secondary addresses; only a differently-cased local part would be
    missed, and then the person is asked for their sign-in address.
    """
    lookup = (
        f"userPrincipalName eq '{ROWAN_SECONDARY.upper()}' or "
        f"mail eq '{ROWAN_SECONDARY.upper()}' or "
        f"proxyAddresses/any(p:p eq 'SMTP:{ROWAN_SECONDARY.upper()}')"
    )
    response = await graph.get("/users", params={"$filter": lookup, "$select": "id"})
    assert [u["id"] for u in response.json()["value"]] == [ROWAN_ID]


@pytest.mark.parametrize(
    ("type_name", "fields"),
    [
        ("user", USER_FIELDS),
        ("group", GROUP_FIELDS),
        ("user", MEMBER_FIELDS),
        ("application", CREDENTIAL_FIELDS),
        ("servicePrincipal", CREDENTIAL_FIELDS),
    ],
)
def test_every_property_the_product_selects_exists_in_graphs_v1_schema(
    type_name: str, fields: str
) -> None:
    """Each property in the product's ``$select`` lists is a property of that type in Microsoft
    Graph v1.0; a misspelt one would be a 400 in production.

    Source: Graph's published v1.0 schema, https://graph.microsoft.com/v1.0/$metadata (kept as
    reference/graph-v1.0.csdl and tests/fixtures/graph-v1.0.csdl.gz).
    """
    known = properties(type_name)
    assert [name for name in fields.split(",") if name not in known] == []


# ---------------------------------------------------------------- advanced queries


async def test_ne_needs_both_advanced_query_parameters(graph: httpx.AsyncClient) -> None:
    """``ne`` on a directory property is an advanced query: without ``ConsistencyLevel:
    eventual`` *and* ``$count=true`` Graph answers 400 ``Request_UnsupportedQuery``; the header
    alone is not enough. With both it answers, with ``@odata.count``.

    Source: https://learn.microsoft.com/graph/aad-advanced-queries (option 2 and "Error handling
    for advanced queries on directory objects").
    """
    params = {"$filter": "accountEnabled ne true"}
    for headers, extra in (({}, {}), (EVENTUAL, {}), ({}, {"$count": "true"})):
        refused = await graph.get("/users", params={**params, **extra}, headers=headers)
        assert refused.status_code == 400, (headers, extra)
        assert error_of(refused)["code"] == "Request_UnsupportedQuery"
    allowed = await graph.get("/users", params={**params, "$count": "true"}, headers=EVENTUAL)
    assert upns(allowed) == ["finley.marsh@example.edu"]
    assert allowed.json()["@odata.count"] == 1


async def test_ends_with_needs_advanced_query_parameters_and_says_so(
    graph: httpx.AsyncClient,
) -> None:
    """``endsWith`` without the advanced parameters is 400 ``Request_UnsupportedQuery`` with the
    message "Operator 'endsWith' is not supported because the required parameters might be
    missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. …".

    Source: https://learn.microsoft.com/graph/aad-advanced-queries ("Error handling", the
    endsWith example and its response body).
    """
    params = {"$filter": "endsWith(mail,'@example.org')"}
    refused = await graph.get("/users", params=params)
    assert refused.status_code == 400
    error = error_of(refused)
    assert error["code"] == "Request_UnsupportedQuery"
    assert error["message"].startswith(
        "Operator 'endsWith' is not supported because the required parameters might be missing."
    )
    allowed = await graph.get("/users", params={**params, "$count": "true"}, headers=EVENTUAL)
    assert upns(allowed) == [ROWAN_UPN]


async def test_ends_with_exists_only_for_the_address_properties(graph: httpx.AsyncClient) -> None:
    """``endsWith`` is indexed only for mail, otherMails, userPrincipalName and proxyAddresses; on
    any other property even an advanced query is 400 ``Request_UnsupportedQuery`` "Unsupported or
    invalid query filter clause specified for property '…' of resource '…'."

    Source: https://learn.microsoft.com/graph/aad-advanced-queries ("Support for filter by
    properties": the endsWith rule, and the not-indexed error example).
    """
    response = await graph.get(
        "/users",
        params={"$filter": "endsWith(displayName,'Ibarra')", "$count": "true"},
        headers=EVENTUAL,
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "Request_UnsupportedQuery"
    assert error["message"] == (
        "Unsupported or invalid query filter clause specified for property 'displayName' of "
        "resource 'User'."
    )


async def test_some_user_properties_filter_only_in_advanced_queries(
    graph: httpx.AsyncClient,
) -> None:
    """officeLocation (like mobilePhone and preferredLanguage) is indexed only in the advanced
    store: even ``eq`` on it needs ConsistencyLevel and $count.

    Source: the user filter table of https://learn.microsoft.com/graph/aad-advanced-queries
    (``includes/filter-directory-objects.md``: officeLocation eq is "Advanced").
    """
    params = {"$filter": "officeLocation eq 'Room 1'"}
    refused = await graph.get("/users", params=params)
    assert (refused.status_code, error_of(refused)["code"]) == (400, "Request_UnsupportedQuery")
    allowed = await graph.get("/users", params={**params, "$count": "true"}, headers=EVENTUAL)
    assert allowed.status_code == 200


async def test_count_without_consistency_level_is_silently_ignored(
    graph: httpx.AsyncClient,
) -> None:
    """``?$count=true`` without ``ConsistencyLevel: eventual`` is not an error: Graph answers 200
    and leaves ``@odata.count`` out. Clients must not read a missing count as zero.

    Source: https://learn.microsoft.com/graph/aad-advanced-queries ("Error handling …": "silently
    ignores the $count query parameter"; the ``users?$count=true`` example without a count).
    """
    response = await graph.get("/users", params={"$count": "true", "$select": "id"})
    assert response.status_code == 200
    assert "@odata.count" not in response.json()
    assert response.json()["value"]


async def test_search_needs_consistency_level(graph: httpx.AsyncClient) -> None:
    """``$search`` on directory objects works only with ``ConsistencyLevel: eventual`` (no
    ``$count`` needed); without it Graph answers 400 ``Request_UnsupportedQuery`` "Request with
    $search query parameter only works through MSGraph with a special request header:
    'ConsistencyLevel: eventual'".

    Source: https://learn.microsoft.com/graph/aad-advanced-queries ("Error handling", the $search
    example and its response body).
    """
    params = {"$search": '"displayName:Rowan"'}
    refused = await graph.get("/users", params=params)
    assert refused.status_code == 400
    error = error_of(refused)
    assert error["code"] == "Request_UnsupportedQuery"
    assert error["message"] == (
        "Request with $search query parameter only works through MSGraph with a special request "
        "header: 'ConsistencyLevel: eventual'"
    )
    allowed = await graph.get("/users", params=params, headers=EVENTUAL)
    assert upns(allowed) == [ROWAN_UPN]


async def test_filter_with_orderby_is_an_advanced_query(graph: httpx.AsyncClient) -> None:
    """``$orderby`` on displayName or userPrincipalName works by default, but ``$filter`` and
    ``$orderby`` in the same request need the advanced query parameters.

    Sources: https://learn.microsoft.com/graph/aad-advanced-queries (the note "Using $filter and
    $orderby together is supported only with advanced queries", and the $orderby table);
    https://learn.microsoft.com/graph/api/user-list (example 4).
    """
    alone = await graph.get("/users", params={"$orderby": "displayName desc", "$select": "id"})
    assert alone.status_code == 200
    both = {"$filter": "accountEnabled eq true", "$orderby": "displayName"}
    refused = await graph.get("/users", params=both)
    assert (refused.status_code, error_of(refused)["code"]) == (400, "Request_UnsupportedQuery")
    allowed = await graph.get("/users", params={**both, "$count": "true"}, headers=EVENTUAL)
    names = [u["displayName"] for u in allowed.json()["value"]]
    assert names == sorted(names, key=str.lower)


async def test_the_all_lambda_operator_is_not_supported(graph: httpx.AsyncClient) -> None:
    """OData's ``all`` operator is not supported in Microsoft Graph; only ``any`` is.

    Source: https://learn.microsoft.com/graph/filter-query-parameter ("all operator": "Currently,
    it isn't supported in Microsoft Graph"). The exact error text is not published; the sandbox
    answers 400 ``Request_UnsupportedQuery``.
    """
    response = await graph.get(
        "/users",
        params={"$filter": "proxyAddresses/all(p:startswith(p,'smtp:'))", "$count": "true"},
        headers=EVENTUAL,
    )
    assert (response.status_code, error_of(response)["code"]) == (400, "Request_UnsupportedQuery")


async def test_an_unknown_filter_property_is_400(graph: httpx.AsyncClient) -> None:
    """Filtering on a property the type does not have is 400 "Could not find a property named '…'
    on type 'microsoft.graph.user'."

    Source: not published as a page; the message is OData's, seen in public reports of Graph
    answers. The product only filters on documented properties, and treats any 400 as a bug
    in its own query.
    """
    response = await graph.get("/users", params={"$filter": "shoeSize eq 3"})
    assert response.status_code == 400
    assert error_of(response)["message"] == (
        "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."
    )


# ---------------------------------------------------------------- apps and their credentials


async def test_applications_list_their_credentials_with_select(graph: httpx.AsyncClient) -> None:
    """``GET /applications?$select=id,appId,displayName,passwordCredentials,keyCredentials``
    returns each app's secrets and certificates. A passwordCredential has keyId, displayName,
    hint (first characters of the secret), startDateTime, endDateTime and never the secret
    (``secretText`` is null outside ``addPassword``); a keyCredential has keyId, displayName,
    type, usage, customKeyIdentifier (the thumbprint), startDateTime, endDateTime.

    Sources: https://learn.microsoft.com/graph/api/application-list,
    https://learn.microsoft.com/graph/api/resources/passwordcredential,
    https://learn.microsoft.com/graph/api/resources/keycredential.
    """
    response = await graph.get("/applications", params={"$select": CREDENTIAL_SELECT})
    apps = response.json()["value"]
    assert all(set(app) == set(CREDENTIAL_SELECT.split(",")) for app in apps)
    secrets = [s for app in apps for s in app["passwordCredentials"]]
    certificates = [k for app in apps for k in app["keyCredentials"]]
    assert secrets and certificates
    for secret in secrets:
        assert secret["secretText"] is None
        assert len(secret["hint"]) == 3
        assert {"keyId", "displayName", "startDateTime", "endDateTime"} <= set(secret)
    for key in certificates:
        assert key["type"] == "AsymmetricX509Cert"
        assert key["usage"] in ("Verify", "Sign")
        assert {"keyId", "displayName", "customKeyIdentifier", "startDateTime"} <= set(key)


async def test_credential_dates_are_utc_iso_8601_with_z(graph: httpx.AsyncClient) -> None:
    """Credential start and end times are ``DateTimeOffset`` values in UTC, written as ISO 8601
    with a ``Z`` (for example ``2014-01-01T00:00:00Z``).

    Source: https://learn.microsoft.com/graph/api/resources/passwordcredential (endDateTime:
    "The Timestamp type represents date and time information using ISO 8601 format and is
    always in UTC time").
    """
    apps = (await graph.get("/applications", params={"$select": CREDENTIAL_SELECT})).json()
    stamps = [
        credential[name]
        for app in apps["value"]
        for credential in app["passwordCredentials"] + app["keyCredentials"]
        for name in ("startDateTime", "endDateTime")
    ]
    for stamp in stamps:
        assert stamp.endswith("Z"), stamp
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert parsed.utcoffset() == dt.timedelta(0)


async def test_application_owners_are_directory_objects(graph: httpx.AsyncClient) -> None:
    """``GET /applications/{id}/owners`` lists the owners as directoryObjects tagged with
    ``@odata.type`` (users, or service principals); a user owner carries the user properties.

    Source: https://learn.microsoft.com/graph/api/application-list-owners.
    """
    apps = (await graph.get("/applications", params={"$select": "id,displayName"})).json()
    app_id = next(a["id"] for a in apps["value"] if a["displayName"] == "Cafeteria Menu Bot")
    owners = (await graph.get(f"/applications/{app_id}/owners")).json()["value"]
    assert owners and all(o["@odata.type"] == "#microsoft.graph.user" for o in owners)
    assert all(o["userPrincipalName"].endswith("@example.edu") for o in owners)
    picked = await graph.get(f"/applications/{app_id}/owners", params={"$select": "id,mail"})
    assert all(set(o) == {"@odata.type", "id", "mail"} for o in picked.json()["value"])


async def test_owner_lookups_batched_twenty_at_a_time_each_answer_for_themselves(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Up to 20 ``GET /applications/{id}/owners`` (or ``/servicePrincipals/{id}/owners``) go in
    one ``$batch``; the batch is answered 200 and each request has its own response, matched by
    ``id``, with its own status: the owners as directoryObjects, or the lookup's own error (an
    unknown app: 404 ``Request_ResourceNotFound``) while the others succeed.

    Sources: https://learn.microsoft.com/graph/json-batching ("Microsoft Graph supports batching
    up to 20 requests"; "If the batch request is parseable, the status code is 200"; each
    response "has a status property"; responses may come in any order, correlated by id),
    https://learn.microsoft.com/graph/api/application-list-owners and
    https://learn.microsoft.com/graph/api/serviceprincipal-list-owners.
    """
    apps = [f"/applications/{app.id}/owners" for app in tenant.state.applications.values()]
    sps = [f"/servicePrincipals/{sp.id}/owners" for sp in tenant.state.service_principals.values()]
    urls = [*(apps + sps)[:19], "/applications/00000000-0000-4000-8000-000000000000/owners"]
    response = await graph.post(
        "/$batch",
        json={"requests": [{"id": str(n), "method": "GET", "url": u} for n, u in enumerate(urls)]},
    )
    assert response.status_code == 200
    answers = {a["id"]: a for a in response.json()["responses"]}
    assert sorted(answers, key=int) == [str(n) for n in range(20)]
    assert [answers[str(n)]["status"] for n in range(19)] == [200] * 19
    owners = [o for n in range(19) for o in answers[str(n)]["body"]["value"]]
    assert owners and all(o["@odata.type"] == "#microsoft.graph.user" for o in owners)
    missing = answers["19"]
    assert missing["status"] == 404
    assert missing["body"]["error"]["code"] == "Request_ResourceNotFound"


async def test_a_throttled_lookup_in_a_batch_is_its_own_429_with_its_own_retry_after(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Requests in a batch are throttled one by one: a throttled one is answered 429 with a
    ``Retry-After`` among its own response headers, inside a batch answered 200, and the others
    are answered as usual. The client retries only the failed ones, after the longest
    ``Retry-After``.

    Source: https://learn.microsoft.com/graph/throttling#throttling-and-batching ("Requests in a
    batch are evaluated individually against throttling limits ... The batch itself succeeds
    with a status code of 200 (OK) ... retry each failed request from the batch using the value
    provided in the retry-after response header from the JSON content"). Earlier versions of
    that page said the batch itself fails with 424; a ``$batch`` call that fails as a whole
    leaves every lookup in it unread, and the credential alerts still go out saying so
    (tests/integration/test_credential_owners.py).
    """
    ids = [app.id for app in tenant.state.applications.values()][:3]
    tenant.add_fault(
        f"/applications/{ids[1]}/owners",
        status=429,
        code="TooManyRequests",
        message="Too many requests.",
        retry_after="7",
    )
    response = await graph.post(
        "/$batch",
        json={
            "requests": [
                {"id": str(n), "method": "GET", "url": f"/applications/{app}/owners"}
                for n, app in enumerate(ids)
            ]
        },
    )
    assert response.status_code == 200
    answers = {a["id"]: a for a in response.json()["responses"]}
    assert (answers["0"]["status"], answers["2"]["status"]) == (200, 200)
    throttled = answers["1"]
    assert throttled["status"] == 429
    assert {k.lower(): v for k, v in throttled["headers"].items()}["retry-after"] == "7"
    assert throttled["body"]["error"]["code"] == "TooManyRequests"


async def test_service_principals_carry_saml_signing_certificates(
    graph: httpx.AsyncClient,
) -> None:
    """A SAML app's signing certificate lives on its service principal, not its application:
    ``keyCredentials`` there hold a ``Sign`` and a ``Verify`` entry for the same certificate.

    Sources: https://learn.microsoft.com/graph/api/resources/keycredential ("usage: … Verify or
    Sign") and https://learn.microsoft.com/graph/application-saml-sso-configure-api (the signing
    certificate is added to the service principal).
    """
    response = await graph.get(
        "/servicePrincipals",
        params={"$filter": "displayName eq 'Campus SSO (SAML)'", "$select": CREDENTIAL_SELECT},
    )
    keys = response.json()["value"][0]["keyCredentials"]
    assert {k["usage"] for k in keys} == {"Sign", "Verify"}


async def test_application_listing_pages_up_to_999_and_sorts_only_in_advanced_queries(
    sandbox_factory: TenantFactory,
) -> None:
    """Applications page 100 at a time by default and up to 999 with ``$top``; following
    ``@odata.nextLink`` reaches every app. Sorting applications (``$orderby=displayName``) is
    an advanced query.

    Sources: https://learn.microsoft.com/graph/api/application-list,
    https://learn.microsoft.com/graph/paging, and the $orderby table of
    https://learn.microsoft.com/graph/aad-advanced-queries (application displayName:
    "Advanced").
    """
    big: SandboxTenant = await sandbox_factory(extra_apps=1200)
    async with graph_client(big) as graph:
        default = (await graph.get("/applications", params={"$select": "id"})).json()
        assert len(default["value"]) == 100
        seen: list[str] = []
        url: str | None = "/applications?$select=id&$top=999"
        while url is not None:
            page = (await graph.get(url)).json()
            assert len(page["value"]) <= 999
            seen.extend(app["id"] for app in page["value"])
            url = page.get("@odata.nextLink")
        assert len(seen) == len(set(seen)) == len(big.state.applications)
        refused = await graph.get("/applications", params={"$orderby": "displayName"})
        assert (refused.status_code, error_of(refused)["code"]) == (
            400,
            "Request_UnsupportedQuery",
        )
        allowed = await graph.get(
            "/applications",
            params={"$orderby": "displayName", "$count": "true", "$select": "displayName"},
            headers=EVENTUAL,
        )
        assert allowed.status_code == 200
