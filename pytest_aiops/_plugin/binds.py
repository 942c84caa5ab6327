"""Whether a failure is "address already in use", and which address the failed bind wanted.

Read from the exception itself, never from the failure's text (a traceback shown with
``--tb=long`` quotes library source, docstrings and all: ``socket.create_server``'s mentions
port 8000). Every exception of the chain (``__cause__``, ``__context__``, even when
suppressed with ``from None`` as asyncio's ``create_server`` does, and exception groups) is
looked at: uvicorn logs the ``OSError`` and raises ``SystemExit``, asyncio re-raises it as a
new ``OSError`` with the address in its message. The address comes from the traceback's
frames: the call being executed in a frame (``sock.bind(address)``, found from the
instruction's source position) with its argument read from that frame's variables (names,
attributes, items: nothing is called), or asyncio's ``create_server`` local ``sa``.
"""

from __future__ import annotations

import ast
import errno
import inspect
import itertools
import linecache
import os
import socket
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

#: Windows' code for "address already in use" (``OSError.winerror``).
WSAEADDRINUSE = 10048
_MESSAGE = "address already in use"
#: Functions whose frame holds the address being bound in a local variable (module file
#: name, function name, variable): asyncio's create_server re-raises its bind failure.
_ADDRESS_LOCALS = (
    ("base_events.py", "create_server", "sa"),
    ("base_events.py", "create_datagram_endpoint", "local_address"),
)
_PLAIN = (int, str, bytes, float, type(None), tuple, list)


@dataclass(frozen=True)
class FailedBind:
    """The address a failed bind asked for, and where in the traceback it was found."""

    host: str | None
    port: int
    protocol: str  # "tcp" or "udp" (from the socket, when the frame shows it)
    where: str  # "file.py:12"

    @property
    def address(self) -> str:
        """``('127.0.0.1', 8000)``, or ``port 8000`` when the host is not known."""
        return f"({self.host!r}, {self.port})" if self.host is not None else f"port {self.port}"


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it carries: causes, contexts, group members; once each."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        members = getattr(current, "exceptions", None)
        if isinstance(members, tuple):
            pending += [m for m in members if isinstance(m, BaseException)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def _in_use(error: BaseException) -> bool:
    if isinstance(error, OSError) and (
        error.errno == errno.EADDRINUSE or getattr(error, "winerror", None) == WSAEADDRINUSE
    ):
        return True
    try:
        return _MESSAGE in str(error).lower()
    except Exception:  # a broken __str__ is no address-in-use
        return False


def is_address_in_use(error: BaseException) -> bool:
    """Whether ``error`` or an exception it carries is "address already in use" (EADDRINUSE,
    98 on Linux, 48 on macOS, or an error saying so, such as a ``SystemExit`` raised while
    handling one)."""
    return any(_in_use(e) for e in exception_chain(error))


class _Unknown(Exception):
    """An expression this module will not evaluate (it could run code) or cannot."""


def _attribute(value: object, name: str) -> object:
    """``value.name`` when it is plain data (an instance's, a class's or a module's), never
    through a property or ``__getattr__``: reading it must not run code."""
    try:
        found = inspect.getattr_static(value, name)
    except AttributeError:
        raise _Unknown from None
    if isinstance(found, types.MemberDescriptorType):  # a __slots__ member: plain storage
        return found.__get__(value, type(value))
    if hasattr(type(found), "__get__") and not isinstance(found, _PLAIN):
        raise _Unknown  # a property, a method, another descriptor
    return found


def _evaluate(node: ast.AST, frame: types.FrameType) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_evaluate(item, frame) for item in node.elts)
    if isinstance(node, ast.Name):
        for scope in (frame.f_locals, frame.f_globals):
            if node.id in scope:
                return scope[node.id]
        raise _Unknown
    if isinstance(node, ast.Attribute):
        return _attribute(_evaluate(node.value, frame), node.attr)
    if isinstance(node, ast.Subscript):
        container = _evaluate(node.value, frame)
        key = _evaluate(node.slice, frame)
        if type(container) in (tuple, list, dict) and isinstance(key, (int, str)):
            try:
                return container[key]  # type: ignore[index]
            except (LookupError, TypeError):
                raise _Unknown from None
    raise _Unknown


def _port(value: object) -> tuple[str | None, int] | None:
    """``(host, port)`` of an address argument: ``(host, port[, ...])`` or a bare port."""
    # Exactly these types: a subclass's __getitem__ or __len__ would run its code.
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list) and len(value) >= 2:
        host, port = value[0], value[1]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if isinstance(host, str) or host is None:
            found = _port(port)
            return (host, found[1]) if found else None
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535:
        return None, value
    return None


def _position(code: types.CodeType, lasti: int) -> tuple[int, int, int, int] | None:
    """``(line, end line, column, end column)`` of the instruction at ``lasti`` (3.11+)."""
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return None
    found = next(itertools.islice(positions(), lasti // 2, None), None)
    if found is None or None in found:
        return None
    return found  # type: ignore[no-any-return]


def _executing_call(code: types.CodeType, lasti: int, lineno: int | None) -> ast.Call | None:
    """The call expression the frame was executing: from the instruction's source position
    (3.11+), else the whole line (3.10), parsed alone."""
    lines = linecache.getlines(code.co_filename)
    position = _position(code, lasti)
    if position is not None:
        first, last, column, end_column = position
        chunk = [line.encode() for line in lines[first - 1 : last]]
        if not chunk:
            return None
        if len(chunk) == 1:
            text = chunk[0][column:end_column]
        else:
            text = b"\n".join([chunk[0][column:], *chunk[1:-1], chunk[-1][:end_column]])
        source, mode = "(" + text.decode(errors="replace") + "\n)", "eval"
    elif lineno is not None and 0 < lineno <= len(lines):
        source, mode = lines[lineno - 1].strip(), "exec"
    else:
        return None
    try:
        tree = ast.parse(source, mode=mode)
    except SyntaxError:
        return None
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    # A position gives the one call (outermost first); a whole line may hold several.
    binds = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "bind"]
    found = binds or calls
    return found[0] if found else None


def _protocol(value: object) -> str:
    if isinstance(value, socket.socket) and value.type == socket.SOCK_DGRAM:
        return "udp"
    return "tcp"


def _bind_in_frame(frame: types.FrameType, lasti: int, lineno: int | None) -> FailedBind | None:
    code = frame.f_code
    where = f"{code.co_filename}:{lineno}"
    for filename, function, name in _ADDRESS_LOCALS:
        if code.co_name == function and code.co_filename.endswith(filename):
            found = _port(frame.f_locals.get(name))
            if found is not None:
                udp = function == "create_datagram_endpoint"
                return FailedBind(*found, "udp" if udp else "tcp", where)
    call = _executing_call(code, lasti, lineno)
    if call is None or not isinstance(call.func, ast.Attribute) or call.func.attr != "bind":
        return None
    if len(call.args) != 1 or call.keywords:
        return None
    try:
        found = _port(_evaluate(call.args[0], frame))
        protocol = _protocol(_evaluate(call.func.value, frame)) if found else "tcp"
    except Exception:  # _Unknown, or user objects behind the names: never fail a report
        return None
    return FailedBind(found[0], found[1], protocol, where) if found else None


def failed_binds(error: BaseException) -> list[FailedBind]:
    """The addresses the failed binds in ``error``'s chain asked for, innermost frame first,
    one per port (usually one in all)."""
    found: list[FailedBind] = []
    for current in exception_chain(error):
        if not _in_use(current):
            continue
        entries = []
        tb = current.__traceback__
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        for entry in reversed(entries):
            bind = _bind_in_frame(entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
            if bind is not None:
                if all(bind.port != other.port for other in found):
                    found.append(bind)
                break  # the innermost bind of this exception is the one that failed
    return found


def short_location(where: str, root: str | None = None) -> str:
    """``where`` (``path:line``) relative to ``root`` (pytest's rootdir) when inside it, else
    to the ``sys.path`` entry holding it (``asyncio/base_events.py:1525``)."""
    path, _, line = where.rpartition(":")
    bases = [root] if root else []
    bases += sorted((entry for entry in sys.path if entry), key=len, reverse=True)
    for base in bases:
        try:
            relative = os.path.relpath(path, base)
        except ValueError:
            continue  # another drive (Windows)
        if not relative.startswith(".."):
            return f"{relative}:{line}"
    return where
