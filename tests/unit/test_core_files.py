"""Storing batch input files over the in-memory ports: what a file of many short lines costs in memory."""

from __future__ import annotations

import tracemalloc

from tests.unit.conftest import World

LINE = b'{"custom_id": "id-%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\n'


def test_a_file_of_50000_short_lines_is_stored_in_memory_for_its_bytes_not_per_line(world: World) -> None:
    """The Files function holds what it stores (the file's ~5 MB here, its custom_ids) and no more: each
    small orjson output keeps a 4 KB buffer (orjson >= 3.12 never trims it), so holding one per line until
    the ids object was joined cost 4 KB a line, 205 MB for OpenAI's 50,000 lines whatever their size."""
    content = b"".join(LINE % n for n in range(50_000))
    chunks = [content[start : start + (1 << 20)] for start in range(0, len(content), 1 << 20)]
    tracemalloc.start()
    try:
        file = world.files.store("master", purpose="batch", filename="in.jsonl", chunks=chunks, expires_after=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert file.batch_input is not None and file.batch_input.line_count == 50_000
    # held: the in-memory store's copy of the file (up to twice its size while it grows), the validator's
    # custom_ids and the ids object, 22 MB in all; a buffer a line would add 205 MB
    assert peak < 48e6, f"storing {len(content) / 1e6:.1f} MB took {peak / 1e6:.1f} MB at its peak"
