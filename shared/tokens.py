"""An estimate of a request's prompt tokens, without a tokenizer: what `POST /v1/batches/estimate` reports.

No tokenizer of a current model family ships without a network fetch at a size the layer can carry (tiktoken
downloads its vocabularies on first use; o200k_base alone is 3.6 MB), so batchgw estimates the way BPE
tokenizers cut text: it splits text as their pre-tokenizers do (words, runs of up to three digits, runs of
punctuation, whitespace) and counts a word of Latin letters at one token per 7 letters, a CJK character at
1.25 tokens, other non-ASCII letters at one per 2, a digit run or a newline at one, punctuation at one per
2 characters (an emoji at 2); plus 3 tokens of framing per message and 3 for the reply (OpenAI's counting
recipe) and 765 per image (a 1024x1024 image at high detail; 85 at low detail). tests/unit/test_tokens.py
measures it against the cl100k_base tokenizer on a mixed sample (English prose, code, JSON, SQL, HTML,
French, German, Russian, Chinese, Japanese, emoji): median error 11 %, at most 22 % on any one text. The
budget's reservation never uses this: it uses the file's bytes, which no tokenizer can exceed, and the
provider's most for each image and file (shared/pricing.py, input_bound). A large file
is estimated from a sample of its lines (shared/jsonl.py, ESTIMATE_ALL_BYTES).
"""

from __future__ import annotations

import re
from typing import Any, Final

_PIECE: Final = re.compile(r"[^\W\d_]+|\d{1,3}|\s+|[^\w\s]+|_+")
_WIDE: Final = 0x2E80  # CJK and beyond: a character is about a token and a quarter
MESSAGE_TOKENS: Final = 3
REPLY_TOKENS: Final = 3
IMAGE_TOKENS: Final = {"low": 85, "high": 765, "auto": 765}
# the content parts of OpenAI's request formats whose tokens their bytes do not bound
IMAGE_PARTS: Final = frozenset({"image_url", "input_image"})
FILE_PARTS: Final = frozenset({"file", "input_file"})


def text_tokens(text: str) -> int:
    """An estimate of the tokens of `text` (this module's doc says how)."""
    return sum(_piece_tokens(piece) for piece in _PIECE.findall(text))


def _piece_tokens(piece: str) -> int:
    first = piece[0]
    if first.isspace():
        return piece.count("\n") + (1 if len(piece) > 1 and "\n" not in piece else 0)
    if first.isdigit():
        return 1
    if first.isalpha():
        if piece.isascii():
            return -(-len(piece) // 7)
        latin = sum(1 for c in piece if c.isascii())
        wide = sum(1 for c in piece if ord(c) >= _WIDE)
        return -(-latin // 7) + -(-wide * 5 // 4) + -(-(len(piece) - latin - wide) // 2)
    if piece.isascii():
        return -(-len(piece) // 2)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in piece)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    total = 0
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text"):
            total += text_tokens(str(part.get("text", "")))
        elif kind in ("image_url", "input_image"):
            image = part.get("image_url")
            detail = image.get("detail", "auto") if isinstance(image, dict) else part.get("detail", "auto")
            total += IMAGE_TOKENS.get(str(detail), IMAGE_TOKENS["auto"])
        else:
            total += text_tokens(str(part))
    return total


def prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """An estimate of the prompt tokens of one request to `endpoint`."""
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        total = REPLY_TOKENS
        for message in messages if isinstance(messages, list) else ():
            if isinstance(message, dict):
                total += MESSAGE_TOKENS + _content_tokens(message.get("content"))
        tools = body.get("tools")
        return total + (text_tokens(str(tools)) if tools else 0)
    if endpoint == "/v1/embeddings":
        given = body.get("input")
        texts = given if isinstance(given, list) else [given]
        return sum(len(t) if isinstance(t, list) else text_tokens(str(t)) for t in texts if t is not None)
    if endpoint == "/v1/completions":
        return text_tokens(str(body.get("prompt", "")))
    given = body.get("input")
    if isinstance(given, list):  # /v1/responses: input items
        return REPLY_TOKENS + sum(
            MESSAGE_TOKENS + _content_tokens(item.get("content")) for item in given if isinstance(item, dict)
        )
    return REPLY_TOKENS + text_tokens(str(given or "")) + text_tokens(str(body.get("instructions") or ""))


def media_parts(endpoint: str, body: dict[str, Any]) -> tuple[int, int]:
    """The images and the files (documents) a request to `endpoint` carries, wherever in its chat messages'
    content or its Responses input they are (a tool's result included). A message whose content is a string,
    most of them, costs a lookup (this runs for every line of a file being validated)."""
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if type(messages) is not list:
            return 0, 0
        pending = [m.get("content") for m in messages if type(m) is dict and type(m.get("content")) is not str]
    elif endpoint == "/v1/responses":
        pending = [body.get("input")]
    else:
        return 0, 0
    images = files = 0
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str):
                images += kind in IMAGE_PARTS
                files += kind in FILE_PARTS
            pending.extend(v for v in node.values() if isinstance(v, dict | list))
    return images, files
