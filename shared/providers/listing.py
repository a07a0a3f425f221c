"""Reading many provider batches' statuses from the provider's list pages, in parallel where the list allows.

A list that pages newest first with an object-id cursor (OpenAI's and Azure's `after`, Anthropic's
`after_id`) can be entered anywhere: the page after one of our own batches holds the batches made just
before it. So our running batches, newest first, are cut into segments, and each segment is read from the
batch just newer than it until every batch of the segment has been seen (or the list ends, or its page
budget is spent): a 10,000-batch deployment is read in about a hundred pages, sixteen at a time, instead of
a hundred pages one after another or ten thousand retrieves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from shared.providers.base import ProviderStatus
from shared.threads import Pool

SEGMENT: Final = 500  # our batches per segment: a few pages each
WORKERS: Final = 16  # segments read at once
SLACK_PAGES: Final = 3  # pages a segment may read beyond its own batches' worth (batches made elsewhere)

# one list page: (provider batch id, its status or None when unreadable) for each batch shown, and whether
# there are more pages
type Page = tuple[list[tuple[str, ProviderStatus | None]], bool]


def statuses_from_pages(
    ids_newest_first: Sequence[str], fetch: Callable[[str | None], Page], *, page_size: int
) -> dict[str, ProviderStatus]:
    """The statuses of `ids_newest_first` that the list pages show, `fetch(cursor)` reading the page after
    `cursor` (None: the newest page)."""
    segments = [
        (ids_newest_first[start - 1] if start else None, set(ids_newest_first[start : start + SEGMENT]))
        for start in range(0, len(ids_newest_first), SEGMENT)
    ]

    def read(segment: tuple[str | None, set[str]]) -> dict[str, ProviderStatus]:  # a Pool: under the caller's deadline
        cursor, wanted = segment
        return _read_segment(fetch, cursor, wanted, -(-len(wanted) // page_size) + SLACK_PAGES)

    statuses: dict[str, ProviderStatus] = {}
    with Pool(max_workers=min(WORKERS, len(segments)) or 1, thread_name_prefix="list") as pool:
        for found in pool.map(read, segments):
            statuses.update(found)
    return statuses


def _read_segment(
    fetch: Callable[[str | None], Page], cursor: str | None, wanted: set[str], budget: int
) -> dict[str, ProviderStatus]:
    found: dict[str, ProviderStatus] = {}
    seen: set[str] = set()
    for _ in range(budget):
        shown, more = fetch(cursor)
        for batch_id, status in shown:
            if batch_id in wanted:
                seen.add(batch_id)
                if status is not None:
                    found[batch_id] = status
        if seen >= wanted or not more or not shown:
            break
        cursor = shown[-1][0]
    return found
