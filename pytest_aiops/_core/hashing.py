"""Deterministic names and seeds derived from session ids (interop contract with the reference)."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_DASHES = re.compile(r"-+")


def _utf8(value: str) -> bytes:
    # Node's Hash.update(string) encodes lone surrogates as U+FFFD; match it.
    return value.encode("utf-8", errors="replace")


def hash_to_unsigned_int(value: str) -> int:
    """First 4 bytes of sha256(UTF-8 value) as a big-endian unsigned int."""
    return _hash_to_unsigned_int(value)


@lru_cache(maxsize=256)  # a pool leases again and again for one session id
def _hash_to_unsigned_int(value: str) -> int:
    return int.from_bytes(hashlib.sha256(_utf8(value)).digest()[:4], "big")


def preferred_block(session_id: str, block_count: int) -> int:
    """The block a session prefers: ``hash_to_unsigned_int(session_id) % block_count``."""
    return hash_to_unsigned_int(session_id) % block_count


def build_scoped_name(session_id: str) -> str:
    """A filesystem-safe, collision-resistant directory name for a session.

    Same as the reference: unsafe characters become ``-`` (runs collapsed), the result is
    cut to 32 characters, and the first 8 hex digits of sha256(session id) are appended.
    JavaScript replaces each UTF-16 code unit; since runs of ``-`` collapse, replacing each
    code point gives the same result.
    """
    safe = _DASHES.sub("-", _UNSAFE.sub("-", session_id))
    base = safe or "session"
    digest = hashlib.sha256(_utf8(session_id)).hexdigest()[:8]
    return f"{base[:32]}-{digest}"
