"""Value classes that cost no generated code (PYTEST_DONT_REWRITE).

``from .._core.values import dataclass`` then ``@dataclass(frozen=True)``: to a type checker
this *is* ``dataclasses.dataclass`` (the import below, under ``TYPE_CHECKING``), and to
``dataclasses.fields``, ``replace`` and ``asdict`` the class is a dataclass. At run time the
dataclass machinery only records the fields (``init=False, eq=False, repr=False``): the
constructor, equality, hashing, ``repr`` and immutability are the shared functions below,
set on each class. Why (issue 23): on Python 3.11 a frozen dataclass compiles six generated
methods with ``exec``, about 3.8 million instructions a class, and a run's first port lease
loads fifteen such classes (55 of the 98 million instructions that first use cost); and a
generated frozen ``__init__`` calls ``object.__setattr__`` once per field, where the shared
one fills the instance's ``__dict__`` at once (a lease makes several of these values).

Semantics match ``frozen=True``: positional or keyword arguments in field order, defaults
and ``default_factory``, ``__post_init__``; fields compare and hash as a tuple
(``compare``, ``hash`` and ``repr`` of :func:`dataclasses.field` honoured); assigning or
deleting an attribute after ``__init__`` raises :class:`dataclasses.FrozenInstanceError`
(``__post_init__`` normalises fields with ``object.__setattr__``, as with frozen
dataclasses). ``inspect.signature`` of a class gives its fields, as a generated
``__init__``'s would.
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
            cls = dataclasses.dataclass(init=False, eq=False, repr=False)(cls)
            fields = dataclasses.fields(cls)
            for field in fields:
                if not field.init:
                    raise TypeError(f"{cls.__name__}.{field.name}: every field is an argument")
            # Read by the shared methods, made once per class.
            cls._value_fields = fields
            cls._value_class = cls  # whose instances refuse every attribute (_setattr)
            # Frozen to the dataclasses module too: a frozen dataclass may subclass it.
            cls.__dataclass_params__.frozen = True
            cls._value_order = tuple(f.name for f in fields)
            cls._value_post_init = hasattr(cls, "__post_init__")
            cls._value_defaults = tuple(
                (f.name, f.default, None if f.default_factory is _MISSING else f.default_factory)
                for f in fields
                if f.default is not _MISSING or f.default_factory is not _MISSING
            )
            cls.__init__ = _init
            cls.__signature__ = _Signature()
            cls.__eq__ = _eq
            cls.__hash__ = _hash
            cls.__repr__ = _repr
            cls.__setattr__ = _setattr
            cls.__delattr__ = _delattr
            return cls

        return wrap


_MISSING: Any = dataclasses.MISSING


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    # Set operations and one dict update, no loop over the fields given (issue 23: a
    # generated __init__ pays an object.__setattr__ call per field).
    cls = type(self)
    order: tuple[str, ...] = cls._value_order
    if args:
        if len(args) > len(order):
            raise TypeError(
                f"{cls.__name__}() takes {len(order)} arguments but {len(args)} were given"
            )
        given = dict(zip(order, args, strict=False))
        if kwargs:
            twice = given.keys() & kwargs.keys()
            if twice:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {min(twice)!r}")
            _check_names(cls, kwargs)
            given.update(kwargs)
        kwargs = given  # positional arguments alone: named by order, nothing to check
    else:
        _check_names(cls, kwargs)
    if len(kwargs) < len(order):
        for name, default, factory in cls._value_defaults:
            if name not in kwargs:
                kwargs[name] = factory() if factory is not None else default
        if len(kwargs) < len(order):
            missing = [name for name in order if name not in kwargs]
            raise TypeError(f"{cls.__name__}() missing required argument {missing[0]!r}")
    self.__dict__.update(kwargs)  # not through __setattr__, which refuses every change
    if cls._value_post_init:
        self.__post_init__()


def _check_names(cls: type, kwargs: dict[str, Any]) -> None:
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    if not kwargs.keys() <= fields.keys():
        unknown = min(kwargs.keys() - fields.keys())
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {unknown!r}")


class _Factory:
    """The default a signature shows for a field made by its ``default_factory``."""

    def __repr__(self) -> str:
        return "<factory>"  # as a generated __init__'s signature shows it


class _Signature:
    """``cls.__signature__``, made on first use from the fields (``inspect`` reads it)."""

    def __get__(self, instance: object, owner: type) -> Any:
        import inspect

        parameters = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=(
                    f.default
                    if f.default is not _MISSING
                    else inspect.Parameter.empty
                    if f.default_factory is _MISSING
                    else _Factory()
                ),
                annotation=f.type,
            )
            for f in dataclasses.fields(owner)
        ]
        return inspect.Signature(parameters, return_annotation=None)


def _compared(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, f.name) for f in value._value_fields if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(
        tuple(
            getattr(self, f.name)
            for f in self._value_fields
            if (f.compare if f.hash is None else f.hash)
        )
    )


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._value_fields if f.repr)
    return f"{self.__class__.__qualname__}({shown})"


def _setattr(self: Any, name: str, value: Any) -> None:
    # As a frozen dataclass's: a plain subclass may set attributes that are not fields.
    if type(self) is self._value_class or name in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _delattr(self: Any, name: str) -> None:
    if type(self) is self._value_class or name in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)
