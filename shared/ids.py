"""Object ids: OpenAI-style prefixes over a time-ordered body, so ids sort by creation time.

The body is 12 hex digits of Unix milliseconds, 4 of a per-process sequence (strictly increasing
within a process, even within one millisecond) and 12 random ones. Listing indexes sort on the id
itself, which makes an `after` cursor a plain key condition.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

FILE = "file-"
BATCH = "batch_"
UPLOAD = "upload_"
PART = "part_"
KEY = "key_"
REQUEST = "batch_req_"

_BODY = r"[0-9a-f]{28}"
_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id(prefix: str) -> str:
    """A fresh id with `prefix`, greater than every id this process made before."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFFF:
                ms, _seq = ms + 1, 0
        else:
            _seq = 0
        _last_ms = ms
        seq = _seq
    return f"{prefix}{ms:012x}{seq:04x}{secrets.token_hex(6)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape of an id made by `new_id(prefix)`."""
    return re.fullmatch(re.escape(prefix) + _BODY, value) is not None
