"""The `batchgw` command: `batchgw dev` runs the local stack; the other verbs drive a gateway (batchgw.client)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _dev(args: argparse.Namespace) -> int:
    from batchgw.devstack import DEV_MASTER_KEY, PortUnavailable, serve
    from shared.routing import BUILTIN_DEV, RoutingError, load_routing

    config = args.config or os.environ.get("BATCHGW_CONFIG") or BUILTIN_DEV
    try:
        load_routing(config)
    except RoutingError as exc:
        print(f"batchgw dev: {exc}", file=sys.stderr)
        return 2

    def ready(base_url: str) -> None:
        key = os.environ.get("BATCHGW_MASTER_KEY", DEV_MASTER_KEY)
        print(
            f"batchgw dev is ready\n  base URL: {base_url}\n  API key:  {key}\n  routing:  {config}",
            flush=True,
        )

    try:
        serve(host=args.host, port=args.port, config=config, poll_interval=args.poll_interval, ready=ready)
    except PortUnavailable as exc:
        print(f"batchgw dev: {exc} (is another batchgw dev running? choose another with --port)", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchgw", description="OpenAI-compatible Batch API gateway for AWS")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run the local stack (API, AWS emulator, poller) in the foreground")
    dev.add_argument("--host", default="127.0.0.1", help="address the API binds to (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=4000, help="API port (default 4000)")
    dev.add_argument("--config", help="routing file (default: $BATCHGW_CONFIG, else the built-in dev config)")
    dev.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (default 5)")
    dev.set_defaults(run=_dev)
    from batchgw.client import add_commands

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        result: int = args.run(args)
        return result
    from batchgw.client import run_client

    return run_client(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
