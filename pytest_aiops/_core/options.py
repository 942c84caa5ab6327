"""Reading and validating provider options, with the reference's rules and messages."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from .._errors import AiopsWarning, OptionError


def refuse_nul(key: str, value: str, what: str = "Option") -> None:
    """Refuse a NUL character by name: no ref, path or argument can hold one, and the OS
    would only say "embedded null byte" without naming the option."""
    if "\0" in value:
        raise OptionError(
            key,
            f'{what} "{key}" contains a NUL character (\\0) at index {value.index(chr(0))}: '
            f"{value!r}; a ref or path cannot contain one, remove it.",
        )


def read_string(options: Mapping[str, Any], key: str, fallback: str) -> str:
    """A non-empty string option (trimmed), or ``fallback`` when absent."""
    value = options.get(key)
    if value is None and key not in options:
        return fallback
    if not isinstance(value, str) or not value.strip():
        raise OptionError(key, f'Option "{key}" must be a non-empty string, not {value!r}.')
    refuse_nul(key, value)
    return value.strip()


def read_optional_string(options: Mapping[str, Any], key: str) -> str | None:
    """A string option; absent or blank means ``None``."""
    value = options.get(key)
    if value is None and key not in options:
        return None
    if not isinstance(value, str):
        raise OptionError(key, f'Option "{key}" must be a string when provided, not {value!r}.')
    refuse_nul(key, value)
    return value.strip() or None


def read_integer(options: Mapping[str, Any], key: str, fallback: int, *, minimum: int) -> int:
    """An integer option ``>= minimum``; booleans and non-integral floats like ``1.5`` are refused.

    JSON has one number type, so ``2.0`` (what ``JSON.parse("2")`` may round-trip to in other
    tools) is accepted as 2, as JavaScript's ``Number.isInteger(2.0)`` does.
    """
    value = options.get(key)
    if value is None and key not in options:
        return fallback
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(key, f'Option "{key}" must be an integer >= {minimum}, not {value!r}.')
    return value


def read_boolean(options: Mapping[str, Any], key: str, fallback: bool) -> bool:
    """A boolean option (JSON ``true``/``false``), or ``fallback`` when absent or null.

    Strings such as ``"false"`` and numbers are refused rather than read as truthy: a
    request written by hand must mean what it says.
    """
    value = options.get(key)
    if value is None:
        return fallback
    if not isinstance(value, bool):
        raise OptionError(key, f'Option "{key}" must be true or false, not {value!r}.')
    return value


_DRIVE = re.compile(r"^[a-zA-Z]:/")


def normalize_target_path(value: str | None, key: str = "targetPath") -> str | None:
    """Validate a worktree-relative path as the reference does; ``None`` if it is empty.

    Backslashes count as separators; absolute paths, drive letters and ``..`` are refused;
    empty and ``.`` segments are dropped.
    """
    if not value:
        return None
    slashed = value.replace("\\", "/")
    if os.path.isabs(slashed) or slashed.startswith("/") or _DRIVE.match(slashed):
        raise OptionError(
            key,
            f'Option "{key}" must be a relative path within the repository worktree, '
            f"not {value!r}.",
        )
    segments = [s.strip() for s in slashed.split("/")]
    segments = [s for s in segments if s and s != "."]
    if any(s == ".." for s in segments):
        raise OptionError(key, f'Option "{key}" must not contain ".." path segments: {value!r}.')
    return "/".join(segments) or None


def resolve_path(base: str, maybe_relative: str) -> str:
    """``maybe_relative`` if absolute, else resolved against ``base`` (like Node's resolve)."""
    expanded = os.path.expanduser(maybe_relative)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(os.path.abspath(base), expanded))


def warn_unknown(options: Mapping[str, Any], known: frozenset[str], kind: str) -> None:
    """Warn about option keys ``kind`` does not know: a typo (``blocksize``) would otherwise
    silently fall back to the default. A warning, not an error, because the reference
    ignores unknown keys and requests written for it must keep working."""
    if options.keys() <= known:
        return  # the usual case, in one set comparison
    unknown = sorted(str(key) for key in options if key not in known)
    if unknown:
        warnings.warn(
            f"{kind} ignores unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(sorted(known))}",
            AiopsWarning,
            stacklevel=3,
        )
