"""Every Convex function, called by its path over the HTTP API of the local stand-in.

The daemon and the tests name Convex functions by string (`ingest:applyBatch`) and build their
arguments in Python: these tests call each one the way the daemon does, through
testing/convex-local (our real `convex/` code, validators and schema, in convex-test), so a renamed
function or a changed argument shape fails here. They also pin the stand-in's HTTP behaviour that
the daemon's retry logic relies on: auth, status codes, and each injected fault.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import httpx
import pytest

from ingestor.ops import OP_TABLE, make_key
from ingestor.sinks.convex.client import ADMIN_IDENTITY, admin_authorization
from tests.helpers.convex_local import READER, STRANGER, WORKER, ConvexLocal, start

pytestmark = pytest.mark.e2e

T0: Final = 1_763_780_000_000  # epoch ms
CONVERSATION: Final = "conv-3f1c"
TURN: Final = "turn-1"
CALL: Final = "call_ls_1"
SESSION: Final = "chat-session-7"
SMALL_ORDER: Final = {
    "sessionId": SESSION,
    "workflowType": "codexRun",
    "prompt": "p",
    "title": "t",
    "targetRepo": "r",
    "targetBranch": "b",
}

# What Python expects of each function: kind and whether only the admin key may call it.
FUNCTIONS: Final = {
    # The app:* functions are exactly the ops the normalizer emits (the contract's names).
    **{f"app:{op}": {"kind": "mutation", "internal": True} for op in OP_TABLE},
    "ingest:applyBatch": {"kind": "mutation", "internal": True},
    "ingest:stageBlobPart": {"kind": "mutation", "internal": True},
    "ingest:dropStage": {"kind": "mutation", "internal": True},
    **{
        f"history:{name}": {"kind": "query", "internal": False}
        for name in ("getConversation", "getTurn", "getCommandOutput", "listEvents")
    },
    **{
        f"summaries:{name}": {"kind": "query", "internal": False}
        for name in ("listConversations", "listUsage")
    },
    **{
        f"workOrders:{name}": {"kind": "mutation", "internal": False}
        for name in ("create", "updateStatus", "updateResult")
    },
    **{f"workOrders:{name}": {"kind": "query", "internal": False} for name in ("listBySession", "get")},
}


@pytest.fixture
def convex(convex_local: ConvexLocal) -> ConvexLocal:
    convex_local.reset()
    return convex_local


@pytest.fixture
def client(convex: ConvexLocal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=convex.url, timeout=30) as http:
        yield http


def call(
    client: httpx.Client, kind: str, path: str, args: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(f"/api/{kind}", json={"path": path, "args": args, "format": "json"}, headers=headers)


def value(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


def function_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error", body
    return body


class Api:
    """Calls as the daemon does: with the admin key, `format: json`, asserting success."""

    def __init__(self, client: httpx.Client, convex: ConvexLocal) -> None:
        self.client = client
        self.headers = convex.admin_headers

    def query(self, path: str, **args: Any) -> Any:
        return value(call(self.client, "query", path, args, self.headers))

    def mutation(self, path: str, **args: Any) -> Any:
        return value(call(self.client, "mutation", path, args, self.headers))


@pytest.fixture
def api(client: httpx.Client, convex: ConvexLocal) -> Api:
    return Api(client, convex)


# One realistic op per table, keyed the way ingestor/normalize keys them.
def ops() -> list[dict[str, Any]]:
    chunk = (
        "dG90YWwgOAotcnctci0tci0tIDEgdSBnIDQyIFJFQURNRS5tZAo="  # "total 8\n-rw-r--r-- 1 u g 42 README.md\n"
    )
    return [
        {
            "op": "upsertConversation",
            "key": make_key("c", CONVERSATION, 1, T0),
            "args": {
                "conversationId": CONVERSATION,
                "threadId": "thread-9a",
                "modelProvider": "openai",
                "clientName": "codex-tui",
                "startedAt": T0,
                "lastSeenAt": T0,
            },
        },
        {
            "op": "upsertTurn",
            "key": make_key("t", TURN, 2, "running"),
            "args": {
                "turnId": TURN,
                "conversationId": CONVERSATION,
                "model": "gpt-5-codex",
                "status": "running",
                "turnNumber": 1,
                "startedAt": T0 + 10,
            },
        },
        {
            "op": "appendMessage",
            "key": make_key("m", TURN, "user", "h1", 0),
            "args": {
                "turnId": TURN,
                "role": "user",
                "content": "list the files",
                "rawContent": [{"type": "input_text", "text": "list the files"}],
                "createdAt": T0 + 11,
            },
        },
        {
            "op": "appendReasoningSection",
            "key": make_key("r", TURN, "h2", 0),
            "args": {
                "turnId": TURN,
                "itemId": "rs_1",
                "summaryText": ["**Listing files**"],
                "position": 0,
                "createdAt": T0 + 12,
            },
        },
        {
            "op": "upsertCommand",
            "key": make_key("x", CALL, 5, "begin"),
            "args": {
                "callId": CALL,
                "turnId": TURN,
                "command": ["bash", "-lc", "ls -l"],
                "cwd": "/work",
                "source": "command",
                "parsedCmd": [{"type": "list_files", "cmd": "ls -l", "path": None}],
                "status": "running",
                "startedAt": T0 + 13,
                "chunked": True,
            },
        },
        {
            "op": "appendCommandChunk",
            "key": make_key("k", CALL, "stdout", 0),
            "args": {
                "callId": CALL,
                "stream": "stdout",
                "seq": 0,
                "chunkBase64": chunk,
                "encoding": "base64",
                "createdAt": T0 + 14,
            },
        },
        {
            "op": "upsertCommand",
            "key": make_key("x", CALL, 7, "end"),
            "args": {
                "callId": CALL,
                "status": "completed",
                "exitCode": 0,
                "durationMs": 31,
                "endedAt": T0 + 44,
            },
        },
        {
            "op": "appendUsageSnapshot",
            "key": make_key("u", TURN, 1200, 0, 80, 64, 1280),
            "args": {
                "turnId": TURN,
                "totalInputTokens": 1200,
                "cachedInputTokens": 0,
                "outputTokens": 80,
                "reasoningOutputTokens": 64,
                "totalTokens": 1280,
                "modelContextWindow": 272000,
                "source": "token_count",
                "capturedAt": T0 + 50,
            },
        },
        {
            "op": "appendRateLimit",
            "key": make_key("l", TURN, "primary", 12.5, 300),
            "args": {
                "turnId": TURN,
                "scope": "primary",
                "usedPercent": 12.5,
                "windowMinutes": 300,
                "resetsAt": T0 + 3_600_000,
                "capturedAt": T0 + 50,
            },
        },
        {
            "op": "appendEvent",
            "key": make_key("e", CONVERSATION, 9),
            "args": {
                "conversationId": CONVERSATION,
                "turnId": TURN,
                "method": "codex/event/exec_command_end",
                # A payload Convex cannot hold as is travels as JSON text (docs/operations.md).
                "payloadJson": '{"$schema": "x", "exit_code": 0}',
                "receivedAt": T0 + 45,
            },
        },
        {
            "op": "upsertTurn",
            "key": make_key("t", TURN, 10, "succeeded"),
            "args": {"turnId": TURN, "status": "succeeded", "endedAt": T0 + 60},
        },
    ]


def test_the_server_has_exactly_the_functions_python_calls(convex: ConvexLocal) -> None:
    assert convex.functions() == FUNCTIONS


def test_app_functions_one_op_each(api: Api) -> None:
    for op in ops():
        result = api.mutation(f"app:{op['op']}", key=op["key"], **op["args"])
        assert result["status"] in ("inserted", "updated"), (op["op"], result)
    # Replayed, nothing changes.
    for op in ops():
        assert api.mutation(f"app:{op['op']}", key=op["key"], **op["args"]) == {"status": "duplicate"}


def test_apply_batch_then_every_history_query(api: Api) -> None:
    batch = ops()
    results = api.mutation("ingest:applyBatch", ops=batch)
    assert [r["status"] for r in results] == ["inserted"] * 6 + ["updated"] + ["inserted"] * 3 + ["updated"]
    assert api.mutation("ingest:applyBatch", ops=batch) == [{"status": "duplicate"}] * len(batch)

    conversation = api.query("history:getConversation", conversationId=CONVERSATION)
    assert conversation["conversation"]["threadId"] == "thread-9a"
    assert [t["turnId"] for t in conversation["turns"]] == [TURN]
    assert api.query("history:getConversation", conversationId="nope") is None

    turn = api.query("history:getTurn", turnId=TURN)
    assert turn["turn"]["status"] == "succeeded"
    assert turn["turn"]["endedAt"] == T0 + 60
    assert [m["content"] for m in turn["messages"]] == ["list the files"]
    assert turn["messages"][0]["rawContent"] == [{"type": "input_text", "text": "list the files"}]
    assert turn["reasoningSections"][0]["summaryText"] == ["**Listing files**"]
    (command,) = turn["commands"]
    assert command["command"] == ["bash", "-lc", "ls -l"]
    assert (command["status"], command["exitCode"], command["chunked"]) == ("completed", 0, True)
    assert turn["usageSnapshots"][0]["totalTokens"] == 1280
    assert turn["rateLimits"][0]["usedPercent"] == 12.5

    output = api.query("history:getCommandOutput", callId=CALL)
    assert output.pop("call")["command"] == ["bash", "-lc", "ls -l"]  # what the output belongs to
    assert output == {
        "callId": CALL,
        "chunkCount": 1,
        "stdout": "total 8\n-rw-r--r-- 1 u g 42 README.md\n",
        "stderr": "",
    }

    page = api.query(
        "history:listEvents", conversationId=CONVERSATION, paginationOpts={"numItems": 10, "cursor": None}
    )
    assert page["isDone"] is True
    (event,) = page["page"]
    assert event["method"] == "codex/event/exec_command_end"
    # Held as text because of the `$schema` key, returned as that text untouched.
    assert event["payloadJson"] == '{"$schema": "x", "exit_code": 0}'


def test_list_events_pages_with_a_cursor(api: Api) -> None:
    events = [
        {
            "op": "appendEvent",
            "key": make_key("e", CONVERSATION, n),
            "args": {
                "conversationId": CONVERSATION,
                "method": "turn/started",
                "payload": {"n": n},
                "receivedAt": T0 + n,
            },
        }
        for n in range(5)
    ]
    api.mutation("ingest:applyBatch", ops=events)
    seen: list[int] = []
    cursor = None
    while True:
        page = api.query(
            "history:listEvents",
            conversationId=CONVERSATION,
            paginationOpts={"numItems": 2, "cursor": cursor},
        )
        seen += [e["payload"]["n"] for e in page["page"]]
        if page["isDone"]:
            break
        cursor = page["continueCursor"]
    assert seen == [0, 1, 2, 3, 4]


def test_work_orders_lifecycle(client: httpx.Client) -> None:
    # Public functions: the Jangar UI calls them signed in as a reader, the worker as a worker.
    reader = ConvexLocal.identity_headers(READER)
    worker = ConvexLocal.identity_headers(WORKER)
    order = {
        "sessionId": SESSION,
        "workflowType": "codexRun",
        "workflowArgs": {"repo": "acme/app", "depth": 2},
        "githubIssueUrl": "https://github.com/acme/app/issues/12",
        "prompt": "Fix the flaky test",
        "title": "Flaky test",
        "requestedBy": "user-42",
        "targetRepo": "https://github.com/acme/app",
        "targetBranch": "codex/flaky-test",
    }
    order_id = value(call(client, "mutation", "workOrders:create", order, reader))
    second = value(
        call(
            client,
            "mutation",
            "workOrders:create",
            # Spec-shaped with requestedBy (the caller itself, as the UI sends it) or without.
            {k: v for k, v in order.items() if k != "requestedBy"}
            | {"title": "Second", "status": "submitted"},
            reader,
        )
    )

    stored = value(call(client, "query", "workOrders:get", {"id": order_id}, reader))
    assert (stored["status"], stored["workflowArgs"]) == ("draft", {"repo": "acme/app", "depth": 2})
    assert stored["requestedBy"] == READER["subject"]

    moved = value(
        call(client, "mutation", "workOrders:updateStatus", {"id": order_id, "status": "submitted"}, worker)
    )
    assert moved["status"] == "submitted"
    assert moved["updatedAt"] > stored["updatedAt"]

    done = value(
        call(
            client,
            "mutation",
            "workOrders:updateResult",
            {"id": order_id, "commitSha": "0123abcd", "prUrl": "https://github.com/acme/app/pull/13"},
            worker,
        )
    )
    assert (done["commitSha"], done["prUrl"]) == ("0123abcd", "https://github.com/acme/app/pull/13")

    page = value(
        call(
            client,
            "query",
            "workOrders:listBySession",
            {"sessionId": SESSION, "paginationOpts": {"numItems": 10, "cursor": None}},
            reader,
        )
    )
    assert [o["_id"] for o in page["page"]] == [second, order_id]  # newest first
    assert {o["requestedBy"] for o in page["page"]} == {READER["subject"]}


def test_an_error_thrown_by_our_code_is_a_function_error(client: httpx.Client) -> None:
    order_id = value(
        call(client, "mutation", "workOrders:create", SMALL_ORDER, ConvexLocal.identity_headers(READER))
    )
    error = function_error(
        call(
            client,
            "mutation",
            "workOrders:updateStatus",
            {"id": order_id, "status": "running"},
            ConvexLocal.identity_headers(WORKER),
        )
    )
    assert error["errorMessage"].startswith("[Request ID: ")
    assert "ConvexError" in error["errorMessage"]
    assert error["errorData"]["code"] == "InvalidTransition"
    assert (error["errorData"]["from"], error["errorData"]["to"]) == ("draft", "running")


def test_an_oversized_batch_is_refused_whole(api: Api, client: httpx.Client, convex: ConvexLocal) -> None:
    event = ops()[-2]
    batch = [{**event, "key": make_key("e", CONVERSATION, n)} for n in range(2001)]
    error = function_error(
        call(client, "mutation", "ingest:applyBatch", {"ops": batch}, convex.admin_headers)
    )
    assert error["errorData"]["code"] == "BatchTooLarge"
    assert (
        api.query(
            "history:listEvents", conversationId=CONVERSATION, paginationOpts={"numItems": 1, "cursor": None}
        )["page"]
        == []
    )


def test_run_endpoint_takes_the_path_from_the_url(client: httpx.Client, convex: ConvexLocal) -> None:
    op = ops()[0]
    response = client.post(
        "/api/run/app/upsertConversation",
        json={"args": {"key": op["key"], **op["args"]}},
        headers=convex.admin_headers,
    )
    assert value(response) == {"status": "inserted"}
    response = client.post(
        "/api/run/history/getConversation",
        json={"args": {"conversationId": CONVERSATION}},
        headers=convex.admin_headers,
    )
    assert value(response)["conversation"]["clientName"] == "codex-tui"
    missing = client.post("/api/run/history", json={"args": {}})
    assert (missing.status_code, missing.json()["code"]) == (400, "MissingIdentifier")


def test_auth(client: httpx.Client, convex: ConvexLocal) -> None:
    op = ops()[0]
    args = {"key": op["key"], **op["args"]}
    # Internal without the key: the same answer as for a function that does not exist.
    error = function_error(call(client, "mutation", "app:upsertConversation", args))
    assert "Could not find public function for 'app:upsertConversation'" in error["errorMessage"]
    unknown = function_error(call(client, "mutation", "app:noSuchFunction", args, convex.admin_headers))
    assert "Could not find public function for 'app:noSuchFunction'" in unknown["errorMessage"]
    # A wrong key is refused before anything runs, even for a public function.
    wrong = {"Authorization": "Convex not-the-key"}
    for path, kind in (("app:upsertConversation", "mutation"), ("history:getConversation", "query")):
        response = call(
            client, kind, path, args if kind == "mutation" else {"conversationId": CONVERSATION}, wrong
        )
        assert response.status_code == 401
        assert response.json() == {
            "code": "BadAdminKey",
            "message": "The provided admin key was invalid for this instance",
        }
    # Nothing above was written.
    getter = call(
        client, "query", "history:getConversation", {"conversationId": CONVERSATION}, convex.admin_headers
    )
    assert value(getter) is None
    assert value(call(client, "mutation", "app:upsertConversation", args, convex.admin_headers)) == {
        "status": "inserted"
    }


def test_request_errors(client: httpx.Client, convex: ConvexLocal) -> None:
    headers = convex.admin_headers
    bad_json = client.post(
        "/api/query", content=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert (bad_json.status_code, bad_json.json()["code"]) == (400, "BadJsonBody")
    no_args = client.post("/api/query", json={"path": "history:getTurn"}, headers=headers)
    assert (no_args.status_code, no_args.json()["code"]) == (400, "BadJsonBody")
    bad_path = call(client, "query", "history:getTurn:x", {"turnId": TURN}, headers)
    assert (bad_path.status_code, bad_path.json()["code"]) == (400, "BadConvexFunctionIdentifier")
    # Failures once a function is resolved are function errors, as on the real backend.
    wrong_kind = function_error(call(client, "query", "ingest:applyBatch", {"ops": []}, headers))
    assert "as Query, but it is defined as Mutation" in wrong_kind["errorMessage"]
    invalid = function_error(call(client, "query", "history:getTurn", {"turnId": 7}, headers))
    # convex-test's wording; the real backend says "ArgumentValidationError: Value does not match validator".
    assert "Validator error: Expected `string`" in invalid["errorMessage"]
    too_large = function_error(
        call(client, "mutation", "ingest:applyBatch", {"ops": [], "pad": "x" * 17_000_000}, headers)
    )
    assert "too large" in too_large["errorMessage"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "OptimisticConcurrencyControlFailure"),
        (429, "TooManyConcurrentRequests"),
        (500, "InternalServerError"),
    ],
)
def test_fail_next_fails_unexecuted_then_recovers(
    api: Api, convex: ConvexLocal, status: int, code: str
) -> None:
    convex.faults(failNext=2, status=status)
    batch = ops()[:1]
    for _ in range(2):
        response = call(api.client, "mutation", "ingest:applyBatch", {"ops": batch}, api.headers)
        assert response.status_code == status
        assert response.json()["code"] == code
    assert api.mutation("ingest:applyBatch", ops=batch) == [{"status": "inserted"}]
    stats = convex.stats()
    assert (stats["faultsServed"], stats["executed"]["mutation"]) == (2, 1)


def test_delay_adds_latency_until_reset(api: Api, convex: ConvexLocal) -> None:
    convex.faults(delayMs=300)
    started = time.monotonic()
    api.query("history:getTurn", turnId=TURN)
    assert time.monotonic() - started >= 0.3
    convex.reset(data=False)
    started = time.monotonic()
    api.query("history:getTurn", turnId=TURN)
    assert time.monotonic() - started < 0.3


def test_drop_after_commit_loses_the_answer_not_the_write(api: Api, convex: ConvexLocal) -> None:
    convex.faults(dropAfterCommitNext=1)
    batch = ops()[:2]
    with pytest.raises(httpx.RemoteProtocolError):
        call(api.client, "mutation", "ingest:applyBatch", {"ops": batch}, api.headers)
    assert api.query("history:getTurn", turnId=TURN)["turn"]["model"] == "gpt-5-codex"
    # The retry a client makes is answered, and finds the batch applied.
    assert api.mutation("ingest:applyBatch", ops=batch) == [{"status": "duplicate"}] * 2
    assert convex.stats()["droppedResponses"] == 1


def test_concurrent_batches_are_all_applied(convex: ConvexLocal, api: Api) -> None:
    def send(worker: int) -> Any:
        batch = [
            {
                "op": "appendEvent",
                "key": make_key("e", CONVERSATION, worker, n),
                "args": {"conversationId": CONVERSATION, "method": "m", "payload": {}, "receivedAt": T0 + n},
            }
            for n in range(10)
        ]
        with httpx.Client(base_url=convex.url, timeout=30) as http:
            return value(call(http, "mutation", "ingest:applyBatch", {"ops": batch}, convex.admin_headers))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(8)))
    assert all(r == [{"status": "inserted"}] * 10 for r in results)
    page = api.query(
        "history:listEvents", conversationId=CONVERSATION, paginationOpts={"numItems": 100, "cursor": None}
    )
    assert len(page["page"]) == 80


def test_keep_alive_connection_serves_many_requests(api: Api) -> None:
    for n in range(200):
        assert api.query("history:getTurn", turnId=f"turn-{n}") is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_open_server_and_clean_exit(sig: signal.Signals) -> None:
    server = start(admin_key=None)
    try:
        assert any("CONVEX_ADMIN_KEY is unset" in line for line in server.output)
        op = ops()[0]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            # Without an admin key configured, internal functions are open (a dev server).
            result = call(http, "mutation", "app:upsertConversation", {"key": op["key"], **op["args"]})
            assert value(result) == {"status": "inserted"}
    finally:
        assert server.stop(sig) == 0


def _public_calls(order_id: str) -> dict[str, tuple[str, dict[str, Any], str]]:
    """One call to every public function: path -> (kind, args, the role it needs)."""
    page = {"numItems": 5, "cursor": None}
    return {
        "history:getConversation": ("query", {"conversationId": CONVERSATION}, "reader"),
        "history:getTurn": ("query", {"turnId": TURN}, "reader"),
        "history:getCommandOutput": ("query", {"callId": CALL}, "reader"),
        "history:listEvents": ("query", {"conversationId": CONVERSATION, "paginationOpts": page}, "reader"),
        "summaries:listConversations": ("query", {"paginationOpts": page}, "reader"),
        "summaries:listUsage": ("query", {"paginationOpts": page}, "reader"),
        "workOrders:create": ("mutation", SMALL_ORDER, "reader"),
        "workOrders:get": ("query", {"id": order_id}, "reader"),
        "workOrders:listBySession": ("query", {"sessionId": SESSION, "paginationOpts": page}, "reader"),
        "workOrders:updateStatus": ("mutation", {"id": order_id, "status": "submitted"}, "worker"),
        "workOrders:updateResult": ("mutation", {"id": order_id, "prUrl": "https://x/pull/1"}, "worker"),
    }


def test_every_public_function_by_caller(api: Api, client: httpx.Client, convex: ConvexLocal) -> None:
    """Anonymous and plain admin-key calls have no identity: refused, as an identity that is not
    allowed is. The admin key acting as its identity, and allowed identities, get answers."""
    api.mutation("ingest:applyBatch", ops=ops())

    def calls() -> dict[str, tuple[str, dict[str, Any], str]]:
        # A new order each time: a status move succeeds once.
        return _public_calls(api.mutation("workOrders:create", **SMALL_ORDER))

    public = sorted(path for path, info in convex.functions().items() if not info["internal"])
    assert sorted(calls()) == public, "every public function is tried"
    plain_admin = {"Authorization": f"Convex {convex.admin_key}"}
    refused = [({}, "Unauthenticated"), (plain_admin, "Unauthenticated")]
    refused.append((ConvexLocal.identity_headers(STRANGER), "Forbidden"))
    for headers, code in refused:
        for path, (kind, args, _role) in calls().items():
            error = function_error(call(client, kind, path, args, headers))
            assert error["errorData"]["code"] == code, (path, headers)
    allowed = [
        ConvexLocal.identity_headers(WORKER),
        convex.admin_headers,
        ConvexLocal.identity_headers(READER),
    ]
    for headers in allowed:
        for path, (kind, args, role) in calls().items():
            response = call(client, kind, path, args, headers)
            if headers is allowed[-1] and role == "worker":
                assert function_error(response)["errorData"]["code"] == "Forbidden", path
            else:
                value(response)


def test_admin_key_acting_as_an_identity_is_parsed_as_the_real_backend_does(
    client: httpx.Client, convex: ConvexLocal
) -> None:
    args = {"conversationId": CONVERSATION}
    acting = admin_authorization(str(convex.admin_key), ADMIN_IDENTITY)
    assert value(call(client, "query", "history:getConversation", args, {"Authorization": acting})) is None
    # A wrong key acting as the admin identity is still a wrong key.
    wrong = admin_authorization("not-the-key", ADMIN_IDENTITY)
    response = call(client, "query", "history:getConversation", args, {"Authorization": wrong})
    assert (response.status_code, response.json()["code"]) == (401, "BadAdminKey")
    for acting in ("%%%", "bm90IGpzb24=", "eyJzdWJqZWN0IjoieCJ9"):  # not base64, not JSON, no issuer
        malformed = {"Authorization": f"Convex {convex.admin_key}:{acting}"}
        response = call(client, "query", "history:getConversation", args, malformed)
        assert (response.status_code, response.json()["code"]) == (400, "HeaderParseFailure")


def test_spec_shaped_app_calls_without_a_key_twice_leave_one_row_each(api: Api) -> None:
    """`app:*` as the spec names them, with the spec's columns and no `key`: sent twice, stored once."""
    for op in ops():
        for attempt in range(2):
            result = api.mutation(f"app:{op['op']}", **op["args"])
            if op["op"].startswith("append"):
                assert result["status"] == ("inserted" if attempt == 0 else "duplicate"), op["op"]
    turn = api.query("history:getTurn", turnId=TURN)
    counts = {
        name: len(turn[name]) for name in ("messages", "reasoningSections", "usageSnapshots", "rateLimits")
    }
    assert counts == {"messages": 1, "reasoningSections": 1, "usageSnapshots": 1, "rateLimits": 1}
    assert api.query("history:getCommandOutput", callId=CALL)["chunkCount"] == 1
    events = api.query(
        "history:listEvents", conversationId=CONVERSATION, paginationOpts={"numItems": 10, "cursor": None}
    )
    assert len(events["page"]) == 1
