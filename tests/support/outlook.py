"""What a person does in Outlook, done through Graph the way their client would."""

from __future__ import annotations

from datetime import datetime, timedelta

from syncwarden.m365 import Microsoft365


async def add_own_event(
    m365: Microsoft365, mailbox_id: str, start: datetime, subject: str = "Personal"
) -> str:
    """An hour-long event of the person's own (no Syncwarden tag); returns its id."""

    def utc(moment: datetime) -> dict[str, str]:
        return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}

    created = await m365.graph.request(
        "POST",
        f"users/{mailbox_id}/events",
        json_body={"subject": subject, "start": utc(start), "end": utc(start + timedelta(hours=1))},
        mailbox=mailbox_id,
    )
    return str(created.body["id"])
