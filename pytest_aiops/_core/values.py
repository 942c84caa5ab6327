"""Value classes that cost one generated method, not six (PYTEST_DONT_REWRITE).

``from .._core.values import dataclass`` then ``@dataclass(frozen=True)``: to a type checker
this *is* ``dataclasses.dataclass`` (the import below, under ``TYPE_CHECKING``), and to
``dataclasses.fields``, ``replace`` and ``asdict`` the class is a dataclass. At run time the
dataclass machinery generates ``__init__`` alone; equality, hashing, ``repr`` and
immutability are the shared functions below, set on each class. On Python 3.11 a frozen
dataclass compiles six generated methods with ``exec`` (about 3.8 million instructions a
class, several times what loading its module costs), and a run's first port lease loads
fifteen such classes: 55 of the 98 million instructions that first use cost (issue 23).
Python 3.13 batches the ``exec`` calls; the shared functions cost the same there.

Semantics match ``frozen=True``: fields compare and hash as a tuple (``compare``, ``hash``
and ``repr`` of :func:`dataclasses.field` honoured); assigning or deleting an attribute
after ``__init__`` raises :class:`dataclasses.FrozenInstanceError` (``__post_init__``
normalises fields with ``object.__setattr__``, as with frozen dataclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass  # noqa: PLC0414 (re-exported)
else:
    _T = TypeVar("_T")

    def dataclass(*, frozen: bool) -> Callable[[type[_T]], type[_T]]:
        """``dataclasses.dataclass(frozen=True)``, its methods shared (module docstring)."""
        if not frozen:
            raise TypeError("values.dataclass makes frozen classes only: frozen=True")

        def wrap(cls: type[_T]) -> type[_T]:
            cls = dataclasses.dataclass(eq=False, repr=False)(cls)
            cls.__eq__ = _eq
            cls.__hash__ = _hash
            cls.__repr__ = _repr
            cls.__setattr__ = _setattr
            cls.__delattr__ = _delattr
            return cls

        return wrap


def _compared(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, f.name) for f in dataclasses.fields(value) if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(
        tuple(
            getattr(self, f.name)
            for f in dataclasses.fields(self)
            if (f.compare if f.hash is None else f.hash)
        )
    )


def _repr(self: Any) -> str:
    shown = ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
    )
    return f"{self.__class__.__qualname__}({shown})"


def _setattr(self: Any, name: str, value: Any) -> None:
    # __init__ sets each field once; nothing sets anything after it.
    if name in self.__dict__ or name not in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
