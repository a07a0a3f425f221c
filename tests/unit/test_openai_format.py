"""Reading OpenAI-compatible batch objects, lines and refusals, including Azure's documented quirks, and the
credentials the adapter sends."""

from __future__ import annotations

import random
from collections.abc import Iterable

import httpx
import orjson
import pytest

from shared.errors import ProviderBusy, ProviderError
from shared.jsonl import LineTooLong
from shared.providers.base import LineUsage, ResultLine, Unreadable, Verbatim
from shared.providers.http import result_file_lines
from shared.providers.openai import FILE_RETRY_AFTER, SecretAuth, busy_refusal
from shared.providers.openai_results import counts_of, errors_of, in_full, openai_state, result_line, result_lines
from shared.records import Counts
from shared.results import checked, render, request_id

# an Azure OpenAI batch as its older REST examples show it
AZURE_BATCH = {
    "cancelled_at": None,
    "completed_at": None,
    "created_at": "2024-07-19T17:13:57.2491382+00:00",
    "endpoint": None,
    "error_file_id": "",
    "errors": None,
    "id": "batch_6caaf24d-54a5-46be-b1b7-518884fcbdde",
    "in_progress_at": None,
    "input_file_id": "file-b4fa7277f3eb4722ac18b90f46102c3f",
    "metadata": None,
    "object": "batch",
    "output_file_id": "",
    "request_counts": {"completed": None, "failed": None, "total": None},
    "status": "Validating",
}


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Validating", "validating"),
        ("InProgress", "in_progress"),
        ("in_progress", "in_progress"),
        ("Finalizing", "finalizing"),
        ("Completed", "completed"),
        ("canceled", "cancelled"),
        ("Cancelling", "cancelling"),
    ],
)
def test_statuses_in_any_spelling(status: str, state: str) -> None:
    assert openai_state(status) == state


def test_unknown_status_is_a_retryable_error() -> None:
    with pytest.raises(ProviderError) as caught:
        openai_state("Exploded")
    assert caught.value.retryable


def test_azure_batch_with_null_counts_and_iso_times_reads_cleanly() -> None:
    assert openai_state(AZURE_BATCH["status"]) == "validating"
    assert counts_of(AZURE_BATCH) == Counts(total=0, completed=0, failed=0)
    assert errors_of(AZURE_BATCH) == ()
    failed = {
        **AZURE_BATCH,
        "errors": {
            "object": "list",
            "data": [{"code": "invalid_json_line", "line": 2, "message": "bad", "param": None}],
        },
    }
    (error,) = errors_of(failed)
    assert (error.code, error.line, error.message) == ("invalid_json_line", 2, "bad")


def test_azure_output_line_without_id_reads_with_its_usage() -> None:
    line = orjson.dumps(
        {
            "custom_id": "task-0",
            "response": {
                "body": {
                    "id": "chatcmpl-9",
                    "object": "chat.completion",
                    "model": "gpt-4o-2024-05-13",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Hi"},
                            "content_filter_results": {},
                        }
                    ],
                    "usage": {"completion_tokens": 5, "prompt_tokens": 27, "total_tokens": 32},
                    "prompt_filter_results": [],
                },
                "request_id": "6caaf24d",
                "status_code": 200,
            },
            "error": None,
        }
    )
    parsed = result_line(line)
    assert isinstance(parsed, ResultLine) and parsed.id is None and parsed.succeeded
    assert parsed.usage == LineUsage(input_tokens=27, output_tokens=5)


def _usage(item: ResultLine | Verbatim) -> LineUsage | None:
    return item.usages[0] if isinstance(item, Verbatim) else item.usage


def _written(item: ResultLine | Verbatim, batch_id: str = "batch_1") -> bytes:
    """What a completion writes for `item` (shared/completion.py: ResultFiles)."""
    return item.raw if isinstance(item, Verbatim) else render(item, batch_id)


_PROVIDER_LINE = (
    b'{"id": "batch_req_7", "custom_id": "c\\u00e9", "response": {"status_code": 200, "request_id": "r",'
    b' "body": {"n": 1.50, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}}, "error": null}'
)


@pytest.mark.parametrize(
    ("raw", "as_written"),
    [
        (_PROVIDER_LINE, True),  # an answered request's line: stored as the provider wrote it, escapes and all
        (_PROVIDER_LINE.replace(b'"id": "batch_req_7", ', b""), False),  # no id: batchgw gives it one
        (_PROVIDER_LINE.replace(b'"id": "batch_req_7"', b'"id": ""'), False),
        (_PROVIDER_LINE.replace(b', "error": null', b', "error": null, "extra": 1'), False),  # not an output field
        (_PROVIDER_LINE.replace(b', "error"', b',\r"error"'), False),  # JSON, but a line break to str.splitlines()
        # a repeated key: orjson reads the last, other readers the first
        (_PROVIDER_LINE.replace(b'"custom_id": "c\\u00e9"', b'"custom_id": "other", "custom_id": "c\\u00e9"'), False),
        (_PROVIDER_LINE.replace(b', "error": null', b', "error": {"code": "x"}, "error": null'), False),
        (
            _PROVIDER_LINE.replace(b'"response": {', b'"response": {"status_code": 200, "body": {}}, "response": {'),
            False,
        ),
        # repeated with one of the two spelt with escapes: named once as written, twice as read
        (
            _PROVIDER_LINE.replace(b'"custom_id": "c\\u00e9"', b'"custom_id": "other", "custom\\u005fid": "c\\u00e9"'),
            False,
        ),
        (
            _PROVIDER_LINE.replace(
                b'"response": {', b'"respons\\u0065": {"status_code": 200, "body": {}}, "response": {'
            ),
            False,
        ),
        (_PROVIDER_LINE.replace(b', "error": null', b', "\\u0065rror": {"code": "x"}, "error": null'), False),
        (_PROVIDER_LINE.replace(b'"id": "batch_req_7", ', b'"\\u0069d": "", "id": "batch_req_7", '), False),
        # escapes in values are read alike by every reader, a quote and a colon after one included: kept as written
        (_PROVIDER_LINE.replace(b'"n": 1.50', b'"n": "\\u00e9\\": x", "m": ["\\u00e9", "\\u00e9 \\\\"]'), True),
    ],
)
def test_a_provider_line_is_written_as_the_one_line_batchgw_read(raw: bytes, as_written: bool) -> None:
    # kept as it is only when every JSON reader reads in it the request batchgw priced; else re-encoded
    parsed = result_line(raw)
    assert isinstance(parsed, Verbatim if as_written else ResultLine)
    assert _usage(parsed) == LineUsage(input_tokens=3, output_tokens=2)
    rendered = _written(parsed)
    assert (rendered == raw + b"\n") is as_written
    assert rendered.count(b"\n") == 1 and rendered.endswith(b"\n") and b"\r" not in rendered
    assert all(rendered.count(key) == 1 for key in (b'"id"', b'"custom_id"', b'"response"', b'"error"'))
    line = orjson.loads(rendered)
    assert line.keys() == {"id", "custom_id", "response", "error"}
    assert (line["custom_id"], line["error"]) == ("c\u00e9", None)
    (read,) = in_full(parsed) if isinstance(parsed, Verbatim) else (parsed,)
    assert isinstance(read, ResultLine) and line["response"] == read.response
    assert line["id"] == ("batch_req_7" if b'"batch_req_7"' in raw else request_id("batch_1", "c\u00e9"))


# a /v1/responses answer's body, which names "response" as its object's type
_RESPONSES_BODY = (
    b'"body": {"id": "resp_1", "object": "response", "status": "completed",'
    b' "usage": {"input_tokens": 3, "output_tokens": 2}}'
)


_ANSWERED = {
    "id": "batch_req_1",
    "custom_id": "c",
    "response": {"status_code": 200, "request_id": "r", "body": {"choices": [], "usage": {"prompt_tokens": 5}}},
    "error": None,
}


def _answered(**body: object) -> dict[str, object]:
    return {**_ANSWERED, "response": {"status_code": 200, "body": body}}


# answered lines (kept as they are), then lines read in full
_KEPT_LINES = [
    _ANSWERED,
    _answered(),  # no usage
    _answered(usage=None),
    _answered(usage={"prompt_tokens": 7, "total_tokens": 7}),  # an embedding's
    _answered(usage={"prompt_tokens": None, "completion_tokens": 2}),
    _answered(
        usage={
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 2, "accepted_prediction_tokens": 0},
        }
    ),
    _answered(usage={"prompt_tokens": 9, "prompt_tokens_details": None, "completion_tokens_details": {}}),
    _answered(usage={"input_tokens": 9, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}),
    _answered(usage={"input_tokens": None, "prompt_tokens": 9}),  # a Responses usage, by its key
    _answered(usage={"prompt_tokens": 10**9, "completion_tokens_details": {"reasoning_tokens": 10**9}}),  # the most
    {**_ANSWERED, "custom_id": "a\nb\r\u2028\u00e9\U0001f600"},
]
_READ_LINES = [
    {**_ANSWERED, "response": {"status_code": 201, "body": {"usage": {"prompt_tokens": 5}}}},
    {**_ANSWERED, "response": {"status_code": 500, "body": {"error": {"message": "boom"}}}},
    {**_ANSWERED, "response": None, "error": {"code": "batch_expired", "message": "m"}},
]


@pytest.mark.parametrize(
    ("line", "kept"), [(line, True) for line in _KEPT_LINES] + [(line, False) for line in _READ_LINES]
)
def test_a_line_read_as_it_is_reads_as_the_line_read_in_full(line: dict[str, object], kept: bool) -> None:
    # what the fast reading of an answered line makes of it, usage above all, is what reading it in full makes
    raw = orjson.dumps(line)
    parsed = result_line(raw)
    assert isinstance(parsed, Verbatim) is kept
    assert parsed is not None and not isinstance(parsed, Unreadable)
    (full,) = in_full(parsed) if isinstance(parsed, Verbatim) else (parsed,)
    custom_id = parsed.custom_ids[0] if isinstance(parsed, Verbatim) else parsed.custom_id
    assert isinstance(full, ResultLine) and full.custom_id == custom_id == line["custom_id"]
    assert _usage(parsed) == (full.usage if full.succeeded else None)
    if isinstance(parsed, Verbatim):
        assert full.succeeded and full.response is not None and full.response["status_code"] == 200


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        # JSON but for bytes that are not UTF-8, in a field only reading in full looks at
        (orjson.dumps(_ANSWERED).replace(b'"choices":[]', b'"choices":["\xff\xfe"]'), "not valid JSON"),
        (orjson.dumps(_ANSWERED).replace(b'"choices":[]', b'"choices":["\xed\xa0\x80"]'), "not valid JSON"),
        # nested deeper than a reader follows
        (orjson.dumps(_ANSWERED).replace(b'"choices":[]', b'"choices":' + b"[" * 5000 + b"]" * 5000), "not valid"),
        (orjson.dumps(_answered(usage={"prompt_tokens": True})), "not a non-negative integer"),
        (orjson.dumps(_answered(usage={"prompt_tokens": 1.5})), "not a non-negative integer"),
        (orjson.dumps(_answered(usage={"prompt_tokens_details": {"cached_tokens": -1}})), "not a non-negative"),
        (orjson.dumps(_answered(usage="5 tokens")), "usage is not an object"),
        # more than any request holds: a wrapped counter (an unsigned -1), or a count past a billion
        (orjson.dumps(_answered(usage={"prompt_tokens": 2**64 - 1})), "more than 1,000,000,000"),
        (orjson.dumps(_answered(usage={"completion_tokens": 10**9 + 1})), "more than 1,000,000,000"),
        (
            orjson.dumps(_answered(usage={"input_tokens": 1, "input_tokens_details": {"cached_tokens": 2**62}})),
            "more than",
        ),
    ],
)
def test_a_line_that_cannot_be_read_in_full_is_never_kept_as_it_is(raw: bytes, why: str) -> None:
    parsed = result_line(raw)
    assert isinstance(parsed, Unreadable) and parsed.custom_id in ("c", None) and why in parsed.reason


def test_blank_lines_are_skipped() -> None:
    assert result_line(b"") is None and result_line(b"  ") is None


@pytest.mark.parametrize(
    ("raw", "custom_id", "why"),
    [
        (b"not json", None, "not valid JSON"),
        # the start of a line too long to read, even one that is whole JSON by itself: never kept as it is
        (LineTooLong(orjson.dumps(_ANSWERED)), "c", "is longer than"),
        (b"[1]", None, "no custom_id"),
        (b'{"no_custom_id": 1}', None, "no custom_id"),
        (b'{"id": "x", "custom_id": "a\\nb", "response": {"status_code": 20', "a\nb", "not valid JSON"),
        (b'{"custom_id": "c", "response": "ok"}', "c", "response is not a JSON object"),
        (b'{"custom_id": "c", "response": null, "error": "boom"}', "c", "error is not a JSON object"),
        (
            b'{"custom_id": "c", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": -3}}}}',
            "c",
            "not a non-negative integer",
        ),
    ],
)
def test_broken_lines_are_unreadable_for_the_custom_id_they_show(raw: bytes, custom_id: str | None, why: str) -> None:
    parsed = result_line(raw)
    assert isinstance(parsed, Unreadable) and parsed.custom_id == custom_id and why in parsed.reason


@pytest.mark.parametrize(
    ("response", "why"),
    [
        ({"status_code": "200", "body": {"usage": {"prompt_tokens": 3}}}, "status_code '200' is not an HTTP status"),
        ({"request_id": "r", "body": {"usage": {"prompt_tokens": 3}}}, "status_code None is not an HTTP status"),
        ({"status_code": 200, "body": "<html>bad gateway</html>"}, "body is not a JSON object"),
        ({"status_code": 200, "body": ["a"]}, "body is not a JSON object"),
    ],
)
def test_lines_whose_response_is_malformed_become_unreadable_before_they_are_written(
    response: dict[str, object], why: str
) -> None:
    parsed = result_line(orjson.dumps({"custom_id": "c", "response": response, "error": None}))
    assert isinstance(parsed, ResultLine)
    checked_line = checked(parsed)
    assert isinstance(checked_line, Unreadable) and checked_line.custom_id == "c" and why in checked_line.reason


# --- a create Azure refuses for now -------------------------------------------------------------------------

PENDING = "The input file file-abc is in 'pending' state. Only files with status 'Processed' are accepted."
QUOTA = (
    "The number of enqueued tokens has surpassed the configured limit of 30K for the deployment 'gpt-4.1-batch'. "
    "Please either increase the limit or try again once the current jobs have finished."
)


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [
        (400, {"code": None, "message": PENDING}, FILE_RETRY_AFTER),
        (400, {"code": "token_limit_exceeded", "message": QUOTA, "param": None, "type": "invalid_request_error"}, 60),
    ],
)
def test_create_refused_for_a_pending_file_or_a_full_token_quota_is_busy(
    status: int, error: dict[str, object], retry_after: float
) -> None:
    busy = busy_refusal(httpx.Response(status, json={"error": error}))
    assert isinstance(busy, ProviderBusy) and busy.retry_after == retry_after
    assert str(error["message"]) in busy.message


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, json={"error": {"code": "invalid_request", "message": "url_mismatch on line 2"}}),
        httpx.Response(400, json={"error": "The input file is in 'pending' state"}),
        httpx.Response(400, content=b"<html>Bad Request</html>"),
        httpx.Response(400, json=["pending state"]),
        httpx.Response(429, json={"error": {"code": "token_limit_exceeded", "message": "slow down"}}),
    ],
)
def test_other_refusals_are_not_busy(response: httpx.Response) -> None:
    assert busy_refusal(response) is None


# --- credentials read again on a 401 -----------------------------------------------------------------------


def test_secret_auth_reads_a_refused_secret_again_and_resends_once_if_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a provider that takes only "new", and a key reference that still reads "old"
    monkeypatch.setenv("ROTATING_KEY", "old")
    seen: list[str | None] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("api-key"))
        return httpx.Response(200 if request.headers.get("api-key") == "new" else 401)

    auth = SecretAuth("env:ROTATING_KEY", header="api-key", scheme="")
    client = httpx.Client(transport=httpx.MockTransport(provider), auth=auth)

    # When a call is refused and the reference still reads the same: it is not resent
    assert client.get("https://azure.example/files").status_code == 401
    assert seen == ["old"]

    # When a call is refused and the reference reads a new value meanwhile: it is resent once with it
    def rotating(request: httpx.Request) -> httpx.Response:
        answer = provider(request)
        monkeypatch.setenv("ROTATING_KEY", "new")  # the rotation lands as the old key is refused
        return answer

    client = httpx.Client(transport=httpx.MockTransport(rotating), auth=auth)
    assert client.get("https://azure.example/files").status_code == 200
    assert seen == ["old", "old", "new"]


def test_secret_auth_sends_a_bearer_token_and_an_unresolvable_reference_is_a_provider_error() -> None:
    seen: list[str | None] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    httpx.Client(transport=httpx.MockTransport(provider), auth=SecretAuth("sk-literal")).get("https://x.example/")
    assert seen == ["Bearer sk-literal"]
    client = httpx.Client(transport=httpx.MockTransport(provider), auth=SecretAuth("env:NOT_SET_ANYWHERE_AT_ALL"))
    with pytest.raises(ProviderError) as caught:
        client.get("https://x.example/")
    assert caught.value.code == "provider_auth" and "NOT_SET_ANYWHERE_AT_ALL" in caught.value.message


def _line_by_line(items: Iterable[ResultLine | Verbatim | Unreadable]) -> list[object]:
    """Each line as read: a kept line as its (custom_id, usage, bytes), any other as read."""
    return [line for item in items for line in (item.each() if isinstance(item, Verbatim) else (item,))]


# lines a provider's file may hold: answered ones kept as they are, others read in full, broken ones, and kept
# ones but for a key named twice (as it is, or once escaped: a list checked at once must still find it)
_ANY_LINES = [
    *(orjson.dumps(line) for line in _KEPT_LINES + _READ_LINES),
    b"not json",
    b"",
    orjson.dumps(_answered(usage={"prompt_tokens": -1})),
    _PROVIDER_LINE,
    _PROVIDER_LINE.replace(b'"custom_id": "c\\u00e9"', b'"custom_id": "other", "custom_id": "c\\u00e9"'),
    _PROVIDER_LINE.replace(b'"custom_id": "c\\u00e9"', b'"custom\\u005fid": "other", "custom_id": "c\\u00e9"'),
    _PROVIDER_LINE.replace(b'"custom_id"', b'"custom\\u005fid"'),
    LineTooLong(_PROVIDER_LINE),
    b'{"id": "batch_req_7", "custom_id": "r", "response": {"status_code": 200, ' + _RESPONSES_BODY + b"}}",
]


@pytest.mark.parametrize("seed", range(40))
def test_lines_read_a_list_at_a_time_read_as_each_line_read_alone(seed: int) -> None:
    rng = random.Random(seed)
    blocks = [rng.choices(_ANY_LINES, k=rng.randint(1, 8)) for _ in range(4)]
    alone = [line for block in blocks for raw in block if (line := result_line(raw)) is not None]
    assert _line_by_line(result_lines(blocks)) == _line_by_line(alone)


def test_a_list_of_answered_lines_is_read_as_one_and_kept_as_written() -> None:
    block = [orjson.dumps(line) for line in _KEPT_LINES]
    (kept,) = result_lines([block])
    assert isinstance(kept, Verbatim) and kept.lines() == block and kept.raw == b"".join(raw + b"\n" for raw in block)
    assert kept.custom_ids == [orjson.loads(raw)["custom_id"] for raw in block]
    # one line that is not kept, and each line is read on its own: the others still kept as written
    with_one_repeated = [*block[:3], block[0].replace(b'"custom_id"', b'"custom_id":"x","custom_id"', 1)]
    items = list(result_lines([with_one_repeated]))
    assert [type(item) for item in items] == [Verbatim, Verbatim, Verbatim, ResultLine]


@pytest.mark.parametrize(
    ("raw", "as_written"),
    [
        # a /v1/responses answer names "response" twice, once as its object's type: kept as written, compact too
        (b'{"id": "batch_req_7", "custom_id": "c", "response": {"status_code": 200, ' + _RESPONSES_BODY + b"}}", True),
        (
            b'{"id":"batch_req_7","custom_id":"c","response":{"status_code":200,'
            + _RESPONSES_BODY.replace(b'": ', b'":')
            + b"}}",
            True,
        ),
        # but a repeated response key beside it is still found
        (
            b'{"id": "batch_req_7", "custom_id": "c", "response": {"status_code": 200, "body": {}}, '
            b'"response": {"status_code": 200, ' + _RESPONSES_BODY + b"}}",
            False,
        ),
        (
            b'{"id": "batch_req_7", "custom_id": "c", "response" : {"status_code": 200, "body": {}}, '
            b'"response": {"status_code": 200, ' + _RESPONSES_BODY + b"}}",
            False,
        ),
    ],
)
def test_a_responses_answer_is_kept_as_written_unless_a_key_is_repeated(raw: bytes, as_written: bool) -> None:
    other = raw.replace(b'"c"', b'"d"')
    items = list(result_lines([[raw, other]]))
    if as_written:
        (read,) = items
        assert isinstance(read, Verbatim) and read.custom_ids == ["c", "d"] and read.raw == raw + b"\n" + other + b"\n"
        assert read.usages == [LineUsage(input_tokens=3, output_tokens=2)] * 2
    else:  # read in full, and written again with one response
        assert [type(item) for item in items] == [ResultLine, ResultLine]


def test_a_downloaded_output_file_is_read_a_chunk_at_a_time_and_kept_byte_for_byte() -> None:
    # the adapters' download path: a file of answered lines comes as a few runs, not a Verbatim per line, and
    # what a completion writes of them is the file as the provider wrote it
    lines = [orjson.dumps({**_ANSWERED, "custom_id": f"r{i}", "id": f"batch_req_{i}"}) for i in range(2000)]
    body = b"".join(line + b"\n" for line in lines)

    def serve(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/files/file-out/content"
        return httpx.Response(200, stream=httpx.ByteStream(body))

    with httpx.Client(transport=httpx.MockTransport(serve), base_url="http://provider") as client:
        items = list(result_file_lines(client, {"output_file_id": "file-out"}, ("output_file_id",)))
    assert all(isinstance(item, Verbatim) for item in items) and len(items) < len(lines) / 10
    kept = [item for item in items if isinstance(item, Verbatim)]
    assert b"".join(item.raw for item in kept) == body
    assert [c for item in kept for c in item.custom_ids] == [f"r{i}" for i in range(2000)]
    assert {u for item in kept for u in item.usages} == {LineUsage(input_tokens=5)}
