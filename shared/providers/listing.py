"""Reading many provider batches' statuses from the provider's list pages, in parallel where the list allows.

A list that pages newest first with an object-id cursor (OpenAI's and Azure's `after`, Anthropic's
`after_id`) can be entered anywhere: the page after one of our own batches holds the batches made just
before it. So our running batches, newest first, are cut into segments, and each segment is read from the
batch just newer than it until every batch of the segment has been seen (or the list ends, or its page
budget is spent): a 10,000-batch deployment is read in about a hundred pages, sixteen at a time, instead of
a hundred pages one after another or ten thousand retrieves. A list whose page token cannot be made from a
batch id (Bedrock's `nextToken`, Vertex's `pageToken`) is read from its newest page on, page after page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from shared.providers.base import ProviderStatus
from shared.threads import Pool

SEGMENT: Final = 500  # our batches per segment: a few pages each
WORKERS: Final = 16  # segments read at once
SLACK_PAGES: Final = 3  # pages a segment may read beyond its own batches' worth (batches made elsewhere)

# one list page: (provider batch id, its status or None when unreadable) for each batch shown, and the cursor
# of the next page (None: the list ends here)
type Page = tuple[list[tuple[str, ProviderStatus | None]], str | None]


def statuses_from_pages(
    ids_newest_first: Sequence[str], fetch: Callable[[str | None], Page], *, page_size: int
) -> dict[str, ProviderStatus]:
    """The statuses of `ids_newest_first` that the list pages show, `fetch(cursor)` reading the page after
    the batch whose id is `cursor` (None: the newest page)."""
    segments = [
        (ids_newest_first[start - 1] if start else None, set(ids_newest_first[start : start + SEGMENT]))
        for start in range(0, len(ids_newest_first), SEGMENT)
    ]

    def read(segment: tuple[str | None, set[str]]) -> dict[str, ProviderStatus]:  # a Pool: under the caller's deadline
        cursor, wanted = segment
        return _read_segment(fetch, cursor, wanted, page_size)

    statuses: dict[str, ProviderStatus] = {}
    with Pool(max_workers=min(WORKERS, len(segments)) or 1, thread_name_prefix="list") as pool:
        for found in pool.map(read, segments):
            statuses.update(found)
    return statuses


def listed_objects(items: object, key: str = "id") -> list[dict[str, Any]]:
    """The objects of a list answer's `items` that carry a string `key` (their id): nothing of an answer that
    does not hold a list, nor of an entry that is not an object with an id."""
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get(key), str)]


def id_cursor_page(shown: list[tuple[str, ProviderStatus | None]], more: bool) -> Page:
    """A page of a list whose next page is the one after its last batch's id."""
    return shown, shown[-1][0] if shown and more else None


def statuses_in_order(ids: Sequence[str], fetch: Callable[[str | None], Page]) -> dict[str, ProviderStatus]:
    """The statuses of `ids` that the list pages show, read one page after another from the first, `fetch(token)`
    reading the page `token` names (None: the first page), until every one of `ids` has been seen. The pages
    allowed are counted from the first page's size: a provider may hold a page to fewer than asked."""
    return _read_segment(fetch, None, set(ids), None)


def _budget(wanted: int, page_size: int) -> int:
    """The pages a read of `wanted` batches may take: their own worth and a few for batches made elsewhere."""
    return -(-wanted // max(page_size, 1)) + SLACK_PAGES


def _read_segment(
    fetch: Callable[[str | None], Page], cursor: str | None, wanted: set[str], page_size: int | None
) -> dict[str, ProviderStatus]:
    found: dict[str, ProviderStatus] = {}
    seen: set[str] = set()
    pages, budget = 0, _budget(len(wanted), page_size or len(wanted))
    while pages < budget:
        shown, following = fetch(cursor)
        if pages == 0 and page_size is None:
            budget = _budget(len(wanted), len(shown))
        pages += 1
        for batch_id, status in shown:
            if batch_id in wanted:
                seen.add(batch_id)
                if status is not None:
                    found[batch_id] = status
        if seen >= wanted or following is None or not shown:
            break
        cursor = following
    return found
