"""JSON ``$batch``: up to 20 sub-requests, each through the full Graph pipeline.

Sub-requests inherit the batch's Authorization header and honour ``dependsOn`` (a failed
dependency yields 424). Graph accepts only three ``dependsOn`` shapes: none at all (fully
parallel), one chain through every request (fully sequential), or every request depending on
the same one; anything else is refused with 400 "Batch should be either fully sequential or
fully parallel" (JSON batching page and Microsoft Q&A). An unordered batch is run at most four
requests at a time, whatever their mailboxes, which is how Graph keeps a batch inside Outlook's
four-concurrent-requests-per-mailbox limit (throttling limits page, Outlook service limits).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict

from syncwarden.sandbox.graph_core import GraphPipeline, GraphRequest, GraphResponse, error_body
from syncwarden.sandbox.odata import GraphError, JsonDict, bad_request

MAX_REQUESTS = 20
# Graph sends Outlook at most this many requests of one unordered batch at a time.
PARALLEL_PER_BATCH = 4
WRITE_METHODS = {"POST", "PATCH", "PUT"}
MIXED_SHAPE = "Batch should be either fully sequential or fully parallel"


def _validate(body: Any) -> list[JsonDict]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise bad_request("Invalid batch payload format.", "BadRequest")
    requests: list[JsonDict] = body["requests"]
    if not requests:
        raise bad_request("Invalid batch payload format.", "BadRequest")
    if len(requests) > MAX_REQUESTS:
        raise bad_request(
            f"Invalid batch payload format: the number of requests ({len(requests)}) exceeds the "
            f"limit of {MAX_REQUESTS}.",
            "BadRequest",
        )
    ids: set[str] = set()
    for item in requests:
        if not isinstance(item, dict):
            raise bad_request("Invalid batch payload format.", "BadRequest")
        for name in ("id", "method", "url"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise bad_request(
                    f"Batch request is missing the required property '{name}'.", "BadRequest"
                )
        # Ids are not case-sensitive and must be unique (json-batching page, request properties).
        if item["id"].lower() in {known.lower() for known in ids}:
            raise bad_request(f"Batch request id '{item['id']}' is duplicated.", "BadRequest")
        ids.add(item["id"])
        if urlsplit(item["url"]).scheme:
            raise bad_request("Batch request URLs must be relative, e.g. /users.", "BadRequest")
        method = item["method"].upper()
        headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
        if (
            method in WRITE_METHODS
            and item.get("body") is not None
            and "content-type" not in headers
        ):
            raise bad_request(
                f"Write request id : {item['id']} does not contain Content-Type header or body.",
                "BadRequest",
            )
    for item in requests:
        dependencies = item.get("dependsOn")
        if dependencies is not None and (
            not isinstance(dependencies, list)
            or not all(isinstance(dep, str) for dep in dependencies)
        ):
            raise bad_request("Invalid batch payload format.", "BadRequest")
        for dep in dependencies or []:
            if dep not in ids:
                raise bad_request(
                    f"Request dependency '{dep}' is not defined in the batch.", "BadRequest"
                )
    if not accepted_shape(requests):
        raise bad_request(MIXED_SHAPE, "BadRequest")
    return requests


def accepted_shape(requests: list[JsonDict]) -> bool:
    """All independent, one chain through every request, or all hanging off the same one."""
    depends = {str(item["id"]): list(item.get("dependsOn") or []) for item in requests}
    roots = [rid for rid, deps in depends.items() if not deps]
    if len(roots) == len(depends):
        return True
    if len(roots) != 1 or any(len(deps) != 1 for deps in depends.values() if deps):
        return False
    root = roots[0]
    if all(deps == [root] for rid, deps in depends.items() if rid != root):
        return True
    # A chain: every request but the root has one predecessor and none is shared.
    successors: dict[str, str] = {}
    for rid, deps in depends.items():
        if deps:
            if deps[0] in successors:
                return False
            successors[deps[0]] = rid
    seen, current = {root}, root
    while current in successors:
        current = successors[current]
        if current in seen:
            return False
        seen.add(current)
    return len(seen) == len(depends)


async def run_batch(pipeline: GraphPipeline, outer: GraphRequest) -> GraphResponse:
    requests = _validate(outer.body)
    results: dict[str, JsonDict] = {}
    done: dict[str, asyncio.Event] = {item["id"]: asyncio.Event() for item in requests}
    dispatcher = asyncio.Semaphore(PARALLEL_PER_BATCH)

    async def run(item: JsonDict) -> None:
        try:
            deps = item.get("dependsOn") or []
            for dep in deps:
                await done[dep].wait()
            failed = [d for d in deps if not 200 <= results[d]["status"] < 300]
            if failed:
                err = GraphError(424, "FailedDependency", "Failed dependency")
                results[item["id"]] = {
                    "id": item["id"],
                    "status": 424,
                    "headers": {"Content-Type": "application/json"},
                    "body": error_body(err, outer.request_id, outer.client_request_id),
                }
                return
            split = urlsplit(item["url"])
            path = "/" + split.path.lstrip("/")
            if path.lower().startswith("/v1.0/"):
                path = path[len("/v1.0") :]
            headers: CIMultiDict[str] = CIMultiDict(
                {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
            )
            headers["Authorization"] = outer.headers.get("Authorization", "")
            sub = GraphRequest(
                method=item["method"].upper(),
                path=path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers=headers,
                body=item.get("body"),
                in_batch=True,
            )
            async with dispatcher:
                response = await pipeline.dispatch(sub)
            entry: JsonDict = {
                "id": item["id"],
                "status": response.status,
                "headers": response.headers,
            }
            if response.body is not None:
                entry["headers"] = {**response.headers, "Content-Type": "application/json"}
                entry["body"] = response.body
            results[item["id"]] = entry
        finally:
            done[item["id"]].set()

    await asyncio.gather(*(run(item) for item in requests))
    return GraphResponse(200, {"responses": [results[item["id"]] for item in requests]})
