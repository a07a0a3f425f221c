"""The `batchgw` CLI's failures as a user meets them when piping or scripting it: one line on stderr, never a
traceback, and bad arguments refused before anything is uploaded or created."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from rich.console import Console

from batchgw import client
from batchgw.cli import main

CONNECTION = ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-test"]


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, io.StringIO]:
    """stdout and stderr as a pipe or a file sees them: not a terminal, 80 columns."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(client, "out", client.console(out))
    monkeypatch.setattr(client, "err", client.console(err))
    return out, err


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "f.jsonl", "--interval", "-1"],  # created the batch, then a traceback from time.sleep
        ["submit", "f.jsonl", "--interval", "0"],
        ["submit", "f.jsonl", "--metadata", "foo"],  # a traceback from dict()
        ["submit", "f.jsonl", "--max-cost", "nan"],  # accepted: the check silently off
        ["submit", "f.jsonl", "--max-cost", "inf"],
        ["submit", "f.jsonl", "--max-cost", "-1"],  # uploaded the file, then "above --max-cost $-1"
        ["keys", "create", "--max-budget", "nan"],  # a traceback from httpx's JSON encoding
        ["keys", "create", "--max-budget", "-5"],
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.jsonl").write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}\n')
    monkeypatch.setattr(client, "_sdk", lambda args: pytest.fail("the gateway was called"))
    monkeypatch.setattr(client, "_admin", lambda *args, **kwargs: pytest.fail("the gateway was called"))
    with pytest.raises(SystemExit) as exited:
        main([*args, *CONNECTION])
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_long_error_is_one_line_on_a_pipe(piped: tuple[io.StringIO, io.StringIO]) -> None:
    _, err = piped

    def refused(args: object) -> int:
        raise client.CommandError("the batch may cost up to $0.001373850, above --max-cost $0.000001; " * 3)

    assert client.run_client(refused, argparse.Namespace()) == 1
    assert len(err.getvalue().splitlines()) == 1, err.getvalue()  # it was wrapped at 80 columns


def _finished_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = SimpleNamespace(id="batch_x", status="completed", output_file_id="file-out", error_file_id=None)
    sdk = SimpleNamespace(
        batches=SimpleNamespace(retrieve=lambda batch_id: batch),
        files=SimpleNamespace(content=lambda file_id: SimpleNamespace(content=b'{"custom_id": "a"}\n')),
    )

    class Client:
        def __enter__(self) -> Any:
            return sdk

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(client, "_sdk", lambda args: Client())


@pytest.mark.parametrize("where", ["nodir/sub/out.jsonl", "."])
def test_results_into_a_place_that_cannot_be_written_is_one_line(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piped: tuple[io.StringIO, io.StringIO]
) -> None:
    _, err = piped
    _finished_batch(monkeypatch)
    assert main(["results", "batch_x", "-o", str(tmp_path / where), *CONNECTION]) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), lines  # was a traceback


def test_stopping_a_wait_says_the_batch_keeps_running(piped: tuple[io.StringIO, io.StringIO]) -> None:
    # Ctrl-C during `submit --wait` ended in a KeyboardInterrupt traceback
    def interrupted(batch_id: str) -> Any:
        raise KeyboardInterrupt

    sdk = SimpleNamespace(batches=SimpleNamespace(retrieve=interrupted))
    batch = openai.types.Batch.model_validate(
        {
            "id": "batch_x",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "status": "in_progress",
            "created_at": 1,
        }
    )
    with pytest.raises(client.CommandError, match="batch_x keeps running"):
        client._wait(sdk, batch, 0.01)  # type: ignore[arg-type]  # the part of the SDK it uses


def test_a_piped_table_shows_whole_ids_and_small_budgets(piped: tuple[io.StringIO, io.StringIO]) -> None:
    out, _ = piped
    key_id = "key_01a237a1b0a50000aaaabbbbccccdddd"
    key: dict[str, Any] = {
        "id": key_id,
        "name": "a team with a rather long name",
        "models": ["gpt-4o-mini", "claude-sonnet-4-5"],
        "max_budget": 0.0001,
        "spend": 0.000012,
        "revoked": False,
    }
    client.out.print(client._keys_table([key]))
    shown = out.getvalue()
    assert key_id in shown  # cut to "key_01a237a1b0a50000…" at 80 columns
    assert "$0.0001 " in shown and "$0.00 " not in shown  # a $0.0001 budget showed as $0.00
    assert isinstance(client.console(io.StringIO()), Console)


def test_submit_of_a_broken_file_shows_the_gateways_rule_as_estimate_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piped: tuple[io.StringIO, io.StringIO]
) -> None:
    # submit read the first line's url before uploading: `{"a": 1}` got "no request with a url found" where
    # the gateway names the line and the rule
    _, err = piped
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\n')

    class Client:
        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def upload(sdk: object, path: Path) -> str:
        raise client.CommandError("400: Invalid batch input file, line 1: custom_id must be a non-empty string")

    monkeypatch.setattr(client, "_sdk", lambda args: Client())
    monkeypatch.setattr(client, "_upload", upload)
    assert main(["submit", str(broken), *CONNECTION]) == 1
    assert err.getvalue() == "error: 400: Invalid batch input file, line 1: custom_id must be a non-empty string\n"


def test_dev_on_a_port_in_use_says_so_at_once_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the port taken (a second `make dev`, or anything else listening there)
    from batchgw import devstack

    monkeypatch.setattr(devstack.DevStack, "start_emulator", lambda self: pytest.fail("the emulator was started"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # Then `batchgw dev` fails before starting anything, in one line naming the port and the way out (it
        # started the emulator, provisioned the stack, and 10 s later printed uvicorn's "[Errno 98]")
        assert main(["dev", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"batchgw dev: cannot listen on 127.0.0.1:{port}" in err
    assert "--port" in err


def test_dev_answers_without_waiting_out_a_delayed_ack() -> None:
    # Given the socket `batchgw dev` listens on, served by asyncio as uvicorn serves it
    import asyncio

    from batchgw.devstack import _listen

    async def accepted_nodelay(listening: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Answer(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        async with await asyncio.get_running_loop().create_server(Answer, sock=listening):
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            writer.close()
            return await asyncio.wait_for(accepted, timeout=10)

    # a loop of its own, the thread's current one left as it is (asyncio.run would drop the one Mangum made)
    loop = asyncio.new_event_loop()
    try:
        with _listen("127.0.0.1", 0) as listening:
            nodelay = loop.run_until_complete(accepted_nodelay(listening))
    finally:
        loop.close()

    # Then each connection it accepts sends at once (TCP_NODELAY): with Nagle on, every answer's body waited for
    # the client's delayed ACK of its headers, and each call to the dev stack took 40 ms more (/health: 44 ms)
    assert nodelay != 0
