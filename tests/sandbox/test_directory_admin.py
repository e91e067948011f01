"""The ``/_sandbox`` directory changes, as a sandbox started in its own process is steered."""

from __future__ import annotations

import httpx

from syncwarden.sandbox.server import SandboxTenant

AVERY = "4e478660-48cd-4008-8a06-4a1af03026a1"
CASEY = "d7dd6da8-9922-4e7b-a3f4-e479fb95fd01"
ROWAN = "17731cc6-062e-41d8-be1d-bc82030ee38d"


async def test_leaver_steps_over_http(raw: httpx.AsyncClient, tenant: SandboxTenant) -> None:
    assert (await raw.post(f"/_sandbox/users/{AVERY}/disable")).status_code == 204
    assert tenant.state.users[AVERY].accountEnabled is False
    assert (await raw.post(f"/_sandbox/users/{AVERY}/enable")).status_code == 204
    assert (await raw.post(f"/_sandbox/users/{AVERY}/soft-delete")).status_code == 204
    assert AVERY in tenant.state.deleted_users and AVERY not in tenant.state.users
    assert (await raw.post(f"/_sandbox/deleted-users/{AVERY}/restore")).status_code == 204
    assert AVERY in tenant.state.users
    assert (await raw.delete(f"/_sandbox/users/{AVERY}")).status_code == 204
    assert AVERY not in tenant.state.users and AVERY not in tenant.state.deleted_users
    assert (await raw.post(f"/_sandbox/deleted-users/{AVERY}/restore")).status_code == 404


async def test_mover_and_manager_over_http(raw: httpx.AsyncClient, tenant: SandboxTenant) -> None:
    moved = await raw.put(
        f"/_sandbox/users/{CASEY}/primary-address", json={"address": "casey.l@example.org"}
    )
    assert moved.status_code == 204
    assert tenant.state.users[CASEY].mail == "casey.l@example.org"
    taken = await raw.put(
        f"/_sandbox/users/{CASEY}/primary-address", json={"address": "ribarra@example.edu"}
    )
    assert taken.status_code == 409  # Rowan's alias: proxy addresses are unique
    assert (
        await raw.put(f"/_sandbox/users/{ROWAN}/manager", json={"manager": None})
    ).status_code == 204
    assert tenant.state.users[ROWAN].manager_id is None


async def test_delta_settings_and_expiry_over_http(
    raw: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    changed = await raw.patch("/_sandbox/directory-delta", json={"expiry": "gone", "page_size": 7})
    assert changed.json()["expiry"] == "gone"
    assert tenant.state.directory_delta.page_size == 7
    assert (await raw.patch("/_sandbox/directory-delta", json={"expiry": "x"})).status_code == 400
    tenant.state.directory_delta_tokens["t"] = ("delta", "users", None)
    assert (await raw.post("/_sandbox/directory-delta/expire")).json() == {"expired": 1}
