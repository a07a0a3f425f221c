"""An estimate of a request's prompt tokens, without a tokenizer: what `POST /v1/batches/estimate` reports.

No tokenizer of a current model family ships without a network fetch at a size the layer can carry (tiktoken
downloads its vocabularies on first use; o200k_base alone is 3.6 MB), so batchgw estimates: ASCII text at
4 characters a token, any other character a token of its own (CJK, emoji), each message's framing at 3
tokens and the reply's priming at 3 (OpenAI's published counting recipe), an image at 765 tokens (a
1024x1024 image at high detail; 85 at low detail). tests/unit/test_tokens.py measures it against the
cl100k_base tokenizer on a mixed sample (English prose, code, JSON, multilingual text) and holds its error
within the bounds the README states. The budget's reservation never uses this: it uses the file's bytes,
which no tokenizer can exceed.
"""

from __future__ import annotations

from typing import Any, Final

MESSAGE_TOKENS: Final = 3
REPLY_TOKENS: Final = 3
IMAGE_TOKENS: Final = {"low": 85, "high": 765, "auto": 765}


def text_tokens(text: str) -> int:
    """ASCII at four characters a token, any other character a token of its own."""
    ascii_chars = sum(1 for c in text if c < "\x80")
    return -(-ascii_chars // 4) + (len(text) - ascii_chars)


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
