"""The `batchgw` client verbs: submit, estimate, status, results, keys, spend, on the official openai SDK.

Base URL and key come from --base-url / --api-key or OPENAI_BASE_URL / OPENAI_API_KEY, as for the SDK.
Admin verbs (keys, spend) need the master key and use the gateway's /admin routes.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import openai
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# files above this go through the Uploads API, in parts that fit under the gateway's 4 MiB request limit
CHUNKED_ABOVE = 3_500_000
PART_BYTES = 4_000_000


def console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console that wraps nothing but at a terminal: in a pipe, a file or a log, a message stays one line
    and a table keeps whole ids and amounts (rich would cut both at 80 columns)."""
    made = Console(file=file, stderr=stderr, soft_wrap=True)
    if not made.is_terminal:
        made.width = 1_000
    return made


out = console()
err = console(stderr=True)


class CommandError(Exception):
    """A failure to report in one line, with exit status 1."""


def _usd(amount: float) -> str:
    """Dollars as the gateway gave them, at least to the cent: $50.00, $0.0001 (not $0.00)."""
    whole, _, cents = f"{Decimal(repr(amount)):f}".partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _amount(text: str) -> float:
    """An argument in dollars: a finite number, not negative."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    """An argument in seconds: a finite number above 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def _pair(text: str) -> tuple[str, str]:
    """A KEY=VALUE argument."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise ValueError(text)
    return key, value


_amount.__name__, _seconds.__name__, _pair.__name__ = "amount of dollars", "number of seconds", "KEY=VALUE pair"


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not base_url or not api_key:
        raise CommandError("set --base-url and --api-key (or OPENAI_BASE_URL and OPENAI_API_KEY)")
    return base_url.rstrip("/"), api_key


def _sdk(args: argparse.Namespace) -> openai.OpenAI:
    base_url, api_key = _connection(args)
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2)


def _admin(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    base_url, api_key = _connection(args)
    root = base_url.removesuffix("/v1")
    try:
        response = httpx.request(
            method, f"{root}{path}", headers={"Authorization": f"Bearer {api_key}"}, timeout=30, **kwargs
        )
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {root}: {exc}") from None
    if response.is_error:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise CommandError(f"{response.status_code}: {message}")
    return response.json()


def _endpoint_of(path: Path) -> str:
    with path.open("rb") as source:
        for raw in source:
            if raw.strip():
                try:
                    url = orjson.loads(raw).get("url")
                except (orjson.JSONDecodeError, AttributeError):
                    raise CommandError(f"{path}: the first line is not a JSON object") from None
                if isinstance(url, str):
                    return url if url.startswith("/v1/") else f"/v1{url}"
                break
    raise CommandError(f"{path}: no request with a url found")


def _cost(batch: openai.types.Batch) -> str:
    cost = (batch.model_extra or {}).get("cost")
    return f"${cost['value']:.6f}" if isinstance(cost, dict) else "-"


def _summary(batch: openai.types.Batch) -> Table:
    counts = batch.request_counts
    table = Table(show_header=False, box=None)
    rows = [
        ("batch", batch.id),
        ("status", batch.status),
        ("model", batch.model or "-"),
        ("endpoint", batch.endpoint),
        ("requests", f"{counts.completed} completed, {counts.failed} failed of {counts.total}" if counts else "-"),
        ("tokens", f"{batch.usage.input_tokens} in, {batch.usage.output_tokens} out" if batch.usage else "-"),
        ("cost", _cost(batch)),
        ("output file", batch.output_file_id or "-"),
        ("error file", batch.error_file_id or "-"),
    ]
    if batch.errors and batch.errors.data:
        rows.append(("errors", "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data)))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/bold]", str(value))
    return table


def _wait(client: openai.OpenAI, batch: openai.types.Batch, interval: float) -> openai.types.Batch:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(batch.status, total=None)
        try:
            while batch.status not in TERMINAL:
                time.sleep(interval)
                batch = client.batches.retrieve(batch.id)
                counts = batch.request_counts
                done = counts.completed + counts.failed if counts else 0
                progress.update(task, description=batch.status, completed=done, total=counts.total if counts else None)
        except KeyboardInterrupt:
            raise CommandError(f"stopped waiting; {batch.id} keeps running (batchgw status {batch.id})") from None
    return batch


def _upload(client: openai.OpenAI, path: Path) -> str:
    """Upload a batch input file (through the Uploads API when large); its file id."""
    if path.stat().st_size > CHUNKED_ABOVE:
        upload = client.uploads.upload_file_chunked(
            file=path, mime_type="application/jsonl", purpose="batch", part_size=PART_BYTES
        )
        if upload.file is None:
            raise CommandError(f"upload {upload.id} ended {upload.status} without a file")
        return upload.file.id
    return client.files.create(file=path, purpose="batch").id


def _estimate(client: openai.OpenAI, file_id: str, endpoint: str) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": endpoint}
    return client.post("/batches/estimate", cast_to=dict[str, Any], body=body)


def _estimate_table(estimate: dict[str, Any]) -> Table:
    table = Table("model", "requests", "input tokens (est.)", "max output tokens", "input cost (est.)", "max cost")
    models = estimate.get("models") or {estimate["model"]: estimate}
    for model, part in models.items():
        table.add_row(
            model,
            f"{part['requests']:,}",
            f"{part['input_tokens']:,}",
            f"{part['max_output_tokens']:,}",
            f"${part['cost']['input']:.6f}",
            f"${part['cost']['max']:.6f}",
        )
    if len(models) > 1:
        cost = estimate["cost"]
        table.add_row(
            "[bold]total[/bold]",
            f"{estimate['requests']:,}",
            f"{estimate['input_tokens']:,}",
            f"{estimate['max_output_tokens']:,}",
            f"${cost['input']:.6f}",
            f"${cost['max']:.6f}",
        )
    return table


def estimate(args: argparse.Namespace) -> int:
    path = Path(args.file_or_id)
    with _sdk(args) as client:
        if path.is_file():
            file_id, endpoint = _upload(client, path), args.endpoint or _endpoint_of(path)
            err.print(f"uploaded {path} as [bold]{file_id}[/bold]")
        elif args.file_or_id.startswith("file-"):
            file_id, endpoint = args.file_or_id, args.endpoint or "/v1/chat/completions"
        else:
            raise CommandError(f"no such file, and not a file id: {args.file_or_id}")
        found = _estimate(client, file_id, endpoint)
    out.print(_estimate_table(found))
    budget = found.get("budget")
    if budget is not None:
        left = budget["max_budget"] - budget["spend"] - budget["reserved"]
        verdict = "fits" if budget["fits"] else "does not fit"
        out.print(f"budget: ${left:.6f} left of {_usd(budget['max_budget'])}; the batch's maximum {verdict}")
    return 0


def submit(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    metadata = dict(args.metadata or [])
    with _sdk(args) as client:
        file_id = _upload(client, path)  # the gateway validates it first and names a broken line's rule
        endpoint = args.endpoint or _endpoint_of(path)
        if args.max_cost is not None:
            most = _estimate(client, file_id, endpoint)["cost"]["max"]
            if most > args.max_cost:
                raise CommandError(
                    f"the batch may cost up to ${most:.6f}, above --max-cost ${args.max_cost:.6f}; not created "
                    f"(its file is {file_id}); set max_tokens on the requests to lower its maximum"
                )
        batch = client.batches.create(
            input_file_id=file_id,
            endpoint=endpoint,  # type: ignore[arg-type]  # checked by the gateway, which names the bad value
            completion_window="24h",
            metadata=metadata or None,
        )
        err.print(f"created [bold]{batch.id}[/bold] from {file_id}")
        if not args.wait:
            out.print(batch.id)
            return 0
        batch = _wait(client, batch, args.interval)
    out.print(_summary(batch))
    return 0 if batch.status == "completed" else 1


def status(args: argparse.Namespace) -> int:
    with _sdk(args) as client:
        batch = client.batches.retrieve(args.batch_id)
    out.print(_summary(batch))
    return 0


def results(args: argparse.Namespace) -> int:
    output = Path(args.output)
    errors = Path(args.errors) if args.errors else output.with_name(f"{output.stem}.errors{output.suffix}")
    with _sdk(args) as client:
        batch = client.batches.retrieve(args.batch_id)
        if batch.status not in TERMINAL:
            raise CommandError(f"{batch.id} is {batch.status}; its results are not ready yet (try --wait on submit)")
        written = []
        for file_id, path in ((batch.output_file_id, output), (batch.error_file_id, errors)):
            if file_id:
                content = client.files.content(file_id).content
                try:
                    path.write_bytes(content)
                except OSError as exc:
                    raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
                written.append(f"{path} ({sum(1 for _ in path.open('rb'))} lines)")
    err.print(f"{batch.id} {batch.status}: " + (", ".join(written) or "no result files"))
    return 0


def keys_create(args: argparse.Namespace) -> int:
    body = {"name": args.name, "models": args.model or None, "max_budget": args.max_budget}
    created = _admin(args, "POST", "/admin/keys", json=body)
    err.print(f"created key [bold]{created['id']}[/bold]; its secret is shown only now:")
    out.print(created["key"])
    return 0


def _keys_table(keys: list[dict[str, Any]]) -> Table:
    table = Table(Column("id", no_wrap=True, min_width=36), "name", "models", "budget", "spend", "revoked")
    for key in keys:
        budget = _usd(key["max_budget"]) if key["max_budget"] is not None else "-"
        table.add_row(
            key["id"],
            key["name"] or "-",
            ", ".join(key["models"] or []) or "all",
            budget,
            f"${key['spend']:.6f}",
            "yes" if key["revoked"] else "",
        )
    return table


def keys_list(args: argparse.Namespace) -> int:
    out.print(_keys_table(_admin(args, "GET", "/admin/keys")["data"]))
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    _admin(args, "DELETE", f"/admin/keys/{args.key_id}")
    err.print(f"revoked {args.key_id}")
    return 0


def spend(args: argparse.Namespace) -> int:
    if not args.key:
        out.print(_keys_table(_admin(args, "GET", "/admin/keys")["data"]))
        return 0
    rows = _admin(args, "GET", f"/admin/keys/{args.key}/spend")["data"]
    table = Table("day", "model", "batches", "requests", "input tokens", "output tokens", "cost")
    for row in rows:
        table.add_row(
            row["day"],
            row["model"],
            str(row["batches"]),
            str(row["requests"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            f"${row['cost']:.6f}",
        )
    out.print(table)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The client verbs, as subcommands of `batchgw`."""

    def command(
        name: str,
        run: Callable[[argparse.Namespace], int],
        help_text: str,
        under: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        parser = under.add_parser(name, help=help_text)
        parser.add_argument("--base-url", help="the gateway's OpenAI base URL (default: $OPENAI_BASE_URL)")
        parser.add_argument("--api-key", help="the key to use (default: $OPENAI_API_KEY)")
        parser.set_defaults(run=run)
        return parser

    parser = command("submit", submit, "upload a batch input file and create a batch")
    parser.add_argument("file", help="the JSONL batch input file")
    parser.add_argument("--endpoint", help="the batch endpoint (default: the url of the file's first request)")
    parser.add_argument(
        "--metadata", action="append", type=_pair, metavar="KEY=VALUE", help="batch metadata (repeatable)"
    )
    parser.add_argument("--wait", action="store_true", help="show progress until the batch ends")
    parser.add_argument(
        "--max-cost", type=_amount, metavar="USD", help="refuse to create the batch if it may cost more than this"
    )
    parser.add_argument("--interval", type=_seconds, default=2.0, help="seconds between status checks with --wait")
    command("status", status, "show a batch").add_argument("batch_id")
    parser = command("estimate", estimate, "what a batch of a file would cost, creating nothing")
    parser.add_argument("file_or_id", help="a JSONL batch input file (uploaded first), or a file id")
    parser.add_argument("--endpoint", help="the batch endpoint (default: the url of the file's first request)")
    parser = command("results", results, "download a finished batch's output and error files")
    parser.add_argument("batch_id")
    parser.add_argument("-o", "--output", required=True, help="where to write the output file")
    parser.add_argument("--errors", help="where to write the error file (default: OUTPUT with .errors)")
    keys = commands.add_parser("keys", help="manage virtual keys (master key)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    parser = command("create", keys_create, "create a key", verbs)
    parser.add_argument("--name")
    parser.add_argument("--model", action="append", help="a model the key may use (repeatable; default all)")
    parser.add_argument("--max-budget", type=_amount, metavar="USD", help="USD the key may spend")
    command("list", keys_list, "list keys", verbs)
    command("revoke", keys_revoke, "revoke a key", verbs).add_argument("key_id")
    command("spend", spend, "spend per key, or per day and model for one key").add_argument("--key")


def run_client(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a client verb, turning failures into one clear line on stderr and exit status 1."""
    try:
        return run(args)
    except CommandError as exc:
        err.print(f"[red]error:[/red] {exc}")
    except openai.APIConnectionError as exc:
        err.print(f"[red]error:[/red] cannot reach the gateway: {exc}")
    except openai.APIStatusError as exc:
        message = exc.body.get("message", exc.message) if isinstance(exc.body, dict) else exc.message
        err.print(f"[red]error:[/red] {exc.status_code}: {message}")
    except OSError as exc:  # a local file the verb reads
        err.print(f"[red]error:[/red] {exc.filename}: {exc.strerror or exc}")
    return 1
