"""What the store does to text before keeping it: NUL characters, which PostgreSQL text cannot hold, are
replaced, and captured output keeps only its last 64 KiB."""

from __future__ import annotations

TEXT_LIMIT = 64 * 1024  # bytes kept of captured stdout/stderr/error text (the tail)


def clean(text: str | None) -> str | None:
    """`text` with its NUL characters replaced (PostgreSQL text cannot hold them; captured output sometimes
    does)."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def clip(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """The last `limit` bytes of `text` (UTF-8), marked as truncated, without NUL characters."""
    text = clean(text)
    if text is None or len(text) <= limit // 4:
        return text
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    marker = f"[... {len(data) - limit} bytes truncated ...]\n"
    return marker + data[-(limit - len(marker)):].decode("utf-8", errors="ignore")
