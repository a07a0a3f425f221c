"""A fake OpenAI-compatible batch API that answers every retrieve in 100 ms, in its own process.

Run as `python -m bench.slow_provider PORT`. Each retrieve reports the batch a little further along.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

LATENCY_SECONDS = 0.1
app = FastAPI()
_seen: Counter[str] = Counter()


@app.get("/v1/batches/{batch_id}")
async def retrieve(batch_id: str) -> JSONResponse:
    await asyncio.sleep(LATENCY_SECONDS)
    _seen[batch_id] += 1
    done = min(_seen[batch_id], 10)
    return JSONResponse(
        {
            "id": batch_id,
            "object": "batch",
            "status": "in_progress",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "created_at": 0,
            "request_counts": {"total": 10, "completed": done, "failed": 0},
        }
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", backlog=2048)
