"""Every property the sandbox returns exists in Microsoft's Graph v1.0 schema (the CSDL)."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import httpx

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "graph-v1.0.csdl.gz"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NAMESPACE = "microsoft.graph"


@cache
def schema_types() -> dict[str, ET.Element]:
    root = ET.fromstring(gzip.decompress(FIXTURE.read_bytes()))  # noqa: S314 - our own fixture
    found: dict[str, ET.Element] = {}
    for schema in root.iter(f"{EDM}Schema"):
        if schema.get("Namespace") != NAMESPACE:
            continue
        for kind in ("EntityType", "ComplexType"):
            for element in schema.findall(f"{EDM}{kind}"):
                found[element.get("Name", "")] = element
    return found


def properties(type_name: str) -> dict[str, str]:
    """Structural and navigation properties, including those inherited through BaseType."""
    element = schema_types()[type_name]
    result: dict[str, str] = {}
    base = element.get("BaseType")
    if base:
        result.update(properties(base.split(".")[-1]))
    for tag in ("Property", "NavigationProperty"):
        for prop in element.findall(f"{EDM}{tag}"):
            result[prop.get("Name", "")] = prop.get("Type", "")
    return result


def element_type(type_ref: str) -> str | None:
    inner = type_ref[len("Collection(") : -1] if type_ref.startswith("Collection(") else type_ref
    return inner.split(".")[-1] if inner.startswith(f"{NAMESPACE}.") else None


def check(obj: dict[str, Any], type_name: str, where: str, problems: list[str]) -> None:
    known = properties(type_name)
    for name, value in obj.items():
        if name.startswith("@"):
            continue
        if name not in known:
            problems.append(f"{where}.{name} is not a property of {type_name}")
            continue
        nested = element_type(known[name])
        if nested is None or nested not in schema_types():
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                check(item, nested, f"{where}.{name}", problems)


def test_the_two_user_types_are_told_apart() -> None:
    assert "userPrincipalName" in properties("user")
    assert "deletedDateTime" in properties("user")  # from directoryObject
    assert "id" in properties("event")  # from entity via outlookItem


async def test_returned_shapes_exist_in_the_schema(graph: httpx.AsyncClient) -> None:
    problems: list[str] = []
    window = {
        "startDateTime": "2000-01-01T00:00:00Z",
        "endDateTime": "2100-01-01T00:00:00Z",
        "$top": "50",
    }
    requests: list[tuple[str, dict[str, str], str]] = [
        ("/users", {}, "user"),
        (
            "/users",
            {
                "$select": "id,displayName,givenName,surname,userPrincipalName,mail,"
                "proxyAddresses,otherMails,accountEnabled,jobTitle,department"
            },
            "user",
        ),
        ("/groups", {}, "group"),
        (
            "/groups",
            {"$select": "id,displayName,groupTypes,mailEnabled,securityEnabled,mail,mailNickname"},
            "group",
        ),
        ("/applications", {}, "application"),
        (
            "/applications",
            {"$select": "id,appId,displayName,passwordCredentials,keyCredentials"},
            "application",
        ),
        ("/servicePrincipals", {}, "servicePrincipal"),
        ("/users/avery.quinlan@example.edu/events", {}, "event"),
        ("/users/avery.quinlan@example.edu/calendarView", window, "event"),
    ]
    for path, params, type_name in requests:
        response = await graph.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        for index, item in enumerate(response.json()["value"]):
            check(item, type_name, f"{path}[{index}]", problems)
    members = await graph.get("/groups/bc490a5b-597c-4082-babe-7ef541eb3972/transitiveMembers")
    for item in members.json()["value"]:
        check(item, item["@odata.type"].split(".")[-1], "transitiveMembers", problems)
    single = await graph.get("/users/avery.quinlan@example.edu")
    check(single.json(), "user", "/users/{upn}", problems)
    assert not problems, "\n".join(problems)
