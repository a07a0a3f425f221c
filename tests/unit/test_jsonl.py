"""The streaming batch input validator: every rule of CONTRACT.md section 4, with 1-based line numbers."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator

import orjson
import pytest

from shared import jsonl
from shared.errors import InvalidBatchInput
from shared.jsonl import MAX_LINES, BatchInputValidator, LineTooLong, iter_lines, validate_batch_input
from shared.tokens import prompt_tokens


def line(
    custom_id: str = "a", *, url: str = "/v1/chat/completions", model: str = "gpt-4o-mini", **extra: object
) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, "messages": []}}
    return orjson.dumps({**request, **extra})


def failure(content: bytes) -> InvalidBatchInput:
    with pytest.raises(InvalidBatchInput) as caught:
        validate_batch_input([content])
    return caught.value


def test_valid_file_yields_count_endpoint_model_and_ids() -> None:
    summary = validate_batch_input([line("a") + b"\n" + line("b") + b"\n\n\n"])
    assert summary.line_count == 2 and summary.custom_ids == ("a", "b")
    assert summary.endpoint == "/v1/chat/completions" and list(summary.models) == ["gpt-4o-mini"]


def test_a_file_may_name_several_models_each_bounded_and_each_line_tagged_with_its_own() -> None:
    summary = validate_batch_input([line("a") + b"\n" + line("b", model="claude") + b"\n" + line("c") + b"\n"])
    assert list(summary.models) == ["gpt-4o-mini", "claude"] and summary.model_of == (0, 1, 0)
    assert summary.models["gpt-4o-mini"].lines == 2 and summary.models["claude"].lines == 1


def test_urls_without_v1_are_normalized() -> None:
    summary = validate_batch_input([line("a", url="/embeddings", model="e") + b"\n"])
    assert summary.endpoint == "/v1/embeddings"


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 10_000])
def test_chunk_boundaries_do_not_matter(chunk_size: int) -> None:
    content = b"\r\n".join(line(str(i)) for i in range(20)) + b"\r\n"
    chunks = [content[i : i + chunk_size] for i in range(0, len(content), chunk_size)]
    assert validate_batch_input(chunks).custom_ids == tuple(str(i) for i in range(20))


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (b"{not json", "invalid_json_line"),
        (b"[1, 2]", "invalid_json_line"),
        (b'{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}', "invalid_custom_id"),
        (line(""), "invalid_custom_id"),
        (
            orjson.dumps({"custom_id": 7, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}),
            "invalid_custom_id",
        ),
        (line("x" * 513), "invalid_custom_id"),
        (line("b", method="GET"), "invalid_method"),
        (line("b", url="/v1/images/generations"), "invalid_url"),
        (line("b", body=[1]), "invalid_body"),
        (line("b", body={"messages": []}), "invalid_model"),
        (line("b", url="/v1/embeddings"), "url_mismatch"),
        (line("a"), "duplicate_custom_id"),
        (b"\xff\xfe", "invalid_encoding"),
    ],
)
def test_each_rule_names_the_second_line(bad: bytes, rule: str) -> None:
    error = failure(line("a") + b"\n" + bad + b"\n" + line("c") + b"\n")
    assert error.line == 2 and error.rule == rule and "line 2" in error.message


def test_duplicate_custom_id_names_the_first_use() -> None:
    error = failure(line("a") + b"\n" + line("b") + b"\n" + line("a") + b"\n")
    assert error.line == 3 and "line 1" in error.message


def test_blank_line_before_more_requests_is_refused_at_the_blank_line() -> None:
    error = failure(line("a") + b"\n\n" + line("b") + b"\n")
    assert error.line == 2 and error.rule == "blank_line"


def test_byte_order_mark_is_refused_with_a_clear_message() -> None:
    error = failure(b"\xef\xbb\xbf" + line("a") + b"\n")
    assert error.line == 1 and "byte order mark" in error.message


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n"])
def test_file_without_requests_is_refused(content: bytes) -> None:
    assert failure(content).rule == "empty_file"


def test_more_than_50000_requests_is_refused_at_line_50001() -> None:
    def chunks() -> Iterator[bytes]:
        for start in range(0, MAX_LINES + 1, 1000):
            yield b"".join(line(str(i)) + b"\n" for i in range(start, min(start + 1000, MAX_LINES + 1)))

    with pytest.raises(InvalidBatchInput) as caught:
        validate_batch_input(chunks())
    assert caught.value.line == MAX_LINES + 1 and caught.value.rule == "too_many_requests"


def test_exactly_50000_requests_is_fine() -> None:
    content = b"".join(line(str(i)) + b"\n" for i in range(MAX_LINES))
    assert validate_batch_input([content]).line_count == MAX_LINES


def test_more_than_200_mb_is_refused_without_holding_the_file() -> None:
    # 5 MB requests, the same bytes object fed again and again: 200 MB pass through, none is kept
    padding = "x" * (5_000_000 - 200)
    big = orjson.dumps(
        {"custom_id": "{id}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": padding}}
    )
    head, tail = big.split(b"{id}")

    def chunks() -> Iterator[bytes]:
        for i in range(60):
            yield head + str(i).encode() + tail + b"\n"

    with pytest.raises(InvalidBatchInput) as caught:
        validate_batch_input(chunks())
    assert caught.value.rule == "file_too_large" and caught.value.line == 41


def test_line_over_32_mb_is_refused() -> None:
    validator = BatchInputValidator()
    validator.feed(line("a") + b"\n")
    with pytest.raises(InvalidBatchInput) as caught:
        for _ in range(40):
            validator.feed(b"x" * 1_000_000)
    assert caught.value.line == 2 and caught.value.rule == "line_too_large"


def test_iter_lines_splits_across_chunks_and_strips_crlf() -> None:
    assert list(iter_lines([b"a\r", b"\nb", b"c\nd"])) == [b"a", b"bc", b"d"]


def test_splitting_a_long_line_fed_in_small_chunks_copies_each_byte_a_bounded_number_of_times() -> None:
    # a 16 MB line in 16 KiB chunks: the old splitter re-copied the whole line at every chunk (quadratic)
    line = b"x" * (16 * 1024 * 1024)
    chunks = [line[i : i + 16 * 1024] for i in range(0, len(line), 16 * 1024)]
    started = time.process_time()
    (got,) = list(iter_lines([*chunks, b"\n"]))
    assert got == line and time.process_time() - started < 2.0  # linear: tens of milliseconds here


def test_a_line_over_the_limit_comes_as_its_start_and_the_next_line_is_read_whole() -> None:
    long = b'{"custom_id": "big", "body": "' + b"y" * 5000 + b'"}'
    lines = list(iter_lines([long[:1000], long[1000:] + b"\n", b'{"custom_id": "next"}\n'], max_bytes=2048))
    assert isinstance(lines[0], LineTooLong) and len(lines[0]) == 2048 and lines[0].startswith(b'{"custom_id": "big"')
    assert lines[1] == b'{"custom_id": "next"}' and len(lines) == 2


def _lines_of(content: bytes, max_bytes: int | None) -> list[tuple[bool, bytes]]:
    """What iter_lines must yield for `content` fed whole: (too long, bytes) for each line."""
    lines = content.split(b"\n")
    if not lines[-1]:
        lines.pop()  # a final newline ends the last line; it does not start one
    return [
        (True, line[:max_bytes])
        if max_bytes is not None and len(line) > max_bytes
        else (False, line.removesuffix(b"\r"))
        for line in lines
    ]


@pytest.mark.parametrize("seed", range(100))
def test_any_chunking_of_any_lines_yields_the_same_lines(seed: int) -> None:
    # blank lines, CRLF, a CR split from its LF, lines longer than the limit, chunks of every size
    rng = random.Random(seed)
    parts = [b"", b"\r", b"ab", b"x" * 40, b"{}", b"\r\r", b"y" * 7]
    content = b"".join(rng.choice(parts) + rng.choice((b"\n", b"\r\n", b"")) for _ in range(60))
    max_bytes = rng.choice((None, 8, 45))
    cuts = sorted(rng.sample(range(1, len(content)), min(len(content) - 1, rng.randint(0, 40))))
    chunks = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    got = [(isinstance(line, LineTooLong), bytes(line)) for line in iter_lines(chunks, max_bytes=max_bytes)]
    assert got == _lines_of(content, max_bytes)


_TEXTS = (
    "The quick brown fox jumps over the lazy dog, twice; then 12345 more times.\n" * 20,
    "def handler(event, context):\n    return {'statusCode': 200, 'body': event['x_1']}\n" * 12,
    "批处理请求的结果将在二十四小时内返回。" * 40,
    "x" * 1500,
)


def test_a_large_files_prompt_estimate_reads_a_bounded_sample_and_stays_close(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 12 MB of requests whose texts vary line by line, each estimate counted
    requests = [
        orjson.dumps(
            {
                "custom_id": str(i),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": _TEXTS[i % 4] * (1 + i % 3)}]},
            }
        )
        for i in range(4800)
    ]
    exact = sum(prompt_tokens("/v1/chat/completions", orjson.loads(r)["body"]) for r in requests)
    calls = 0

    def counted(endpoint: str, body: dict[str, object]) -> int:
        nonlocal calls
        calls += 1
        return prompt_tokens(endpoint, body)

    monkeypatch.setattr(jsonl, "prompt_tokens", counted)
    content = b"\n".join(requests)
    assert len(content) > 12_000_000

    bounds = validate_batch_input([content[i : i + 65536] for i in range(0, len(content), 65536)]).models["m"]

    # Then it estimates every line of its first 256 KB and a few dozen lines each time the bytes double after,
    # and lands within 2 % of estimating every line
    first = sum(1 for n in itertools.accumulate(len(r) for r in requests) if n <= jsonl.ESTIMATE_ALL_BYTES)
    assert calls <= first + jsonl.ESTIMATE_SAMPLES * 6 and calls < len(requests) // 10, calls
    assert abs(bounds.estimated_input_tokens - exact) <= 0.02 * exact, (bounds.estimated_input_tokens, exact)


def test_a_small_files_prompt_estimate_is_every_lines() -> None:
    requests = [{"model": "m", "messages": [{"role": "user", "content": text}]} for text in _TEXTS]
    content = b"\n".join(
        orjson.dumps({"custom_id": str(i), "method": "POST", "url": "/v1/chat/completions", "body": body})
        for i, body in enumerate(requests)
    )
    estimate = validate_batch_input([content]).models["m"].estimated_input_tokens
    assert estimate == sum(prompt_tokens("/v1/chat/completions", body) for body in requests)


def test_bounds_sum_each_lines_output_limit_and_count_the_answers_of_lines_without_one() -> None:
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "max_tokens": 10}},
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "max_completion_tokens": 20, "n": 3},
        },
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
        # four answers without a limit: each bounded by the deployment's, as four lines would be
        {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "n": 4}},
    ]
    raw = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    (bounds,) = validate_batch_input([raw]).models.values()
    assert (bounds.lines, bounds.output_tokens, bounds.unbounded_lines) == (4, 10 + 60, 1 + 4)
    assert bounds.input_tokens == len(raw) - 4  # every byte of every line but the newlines


def test_best_of_completions_are_bounded_as_generated() -> None:
    # OpenAI generates (and bills) best_of completions server-side and returns n of them
    body = {"model": "m", "prompt": "hi", "max_tokens": 10, "best_of": 5, "n": 2}
    raw = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": body})
    (bounds,) = validate_batch_input([raw]).models.values()
    assert bounds.output_tokens == 50


def _media_line(custom_id: str, url: str, body: dict[str, object]) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": "m", **body}})


def test_images_and_files_are_counted_wherever_a_request_carries_them() -> None:
    # whose tokens its bytes do not bound: a URL of a few bytes is an image of thousands of tokens
    image = {"type": "image_url", "image_url": {"url": "https://x.io/a.png", "detail": "high"}}
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}
    tool_result = {"role": "tool", "tool_call_id": "t", "content": [{"type": "text", "text": "x"}, image]}
    chat = [
        _media_line("a", "/v1/chat/completions", {"messages": [{"role": "user", "content": [image, image, pdf]}]}),
        _media_line("b", "/v1/chat/completions", {"messages": [{"role": "user", "content": "plain"}, tool_result]}),
        # an escaped type is the same type to the provider
        _media_line("c", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}).replace(
            b'"content":"x"', b'"content":[{"type":"image\\u005furl","image_url":{"url":"https://x.io/b.png"}}]'
        ),
    ]
    (bounds,) = validate_batch_input([b"\n".join(chat)]).models.values()
    assert (bounds.images, bounds.files) == (4, 1)
    responses = _media_line(
        "r",
        "/v1/responses",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": "https://x.io/a.png"},
                        {"type": "input_file", "file_id": "file-1"},
                    ],
                }
            ]
        },
    )
    (bounds,) = validate_batch_input([responses]).models.values()
    assert (bounds.images, bounds.files) == (1, 1)
    (bounds,) = validate_batch_input([line("t")]).models.values()
    assert (bounds.images, bounds.files) == (0, 0)


def _model_lines(models: list[str]) -> bytes:
    return b"".join(
        orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": m}})
        + b"\n"
        for i, m in enumerate(models)
    )


def test_a_file_may_name_twenty_models_with_names_up_to_256_characters() -> None:
    models = [f"{i:02d}" + "m" * 254 for i in range(20)]
    info = validate_batch_input([_model_lines(models * 2)])
    assert list(info.models) == models and info.line_count == 40


@pytest.mark.parametrize(
    ("models", "line", "rule"),
    [([f"m{i}" for i in range(21)], 21, "too_many_models"), (["a", "a", "m" * 257], 3, "invalid_model")],
)
def test_a_file_naming_more_models_than_a_batch_runs_is_refused_at_the_line(
    models: list[str], line: int, rule: str
) -> None:
    with pytest.raises(InvalidBatchInput) as refused:
        validate_batch_input([_model_lines(models)])
    assert (refused.value.line, refused.value.rule) == (line, rule)
