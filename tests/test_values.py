"""The core's value classes (``_core/values.py``): frozen dataclasses whose equality, hash,
repr and immutability are shared functions instead of generated ones (issue 23). Each
behaviour is checked against what ``dataclasses.dataclass(frozen=True)`` does."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from pytest_aiops._core import values
from pytest_aiops._core.ports import PortAllocation, PortSpec
from pytest_aiops._core.types import ResourceLease, ResourceRequest


@values.dataclass(frozen=True)
class Shared:
    name: str
    port: int = 0
    hidden: int = dataclasses.field(default=0, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Generated:
    name: str
    port: int = 0
    hidden: int = dataclasses.field(default=0, compare=False, repr=False)


@pytest.mark.parametrize("cls", [Shared, Generated], ids=["shared", "generated"])
def test_behaves_as_a_frozen_dataclass(cls: Any) -> None:
    a, b, c = cls("x", 1, hidden=5), cls("x", 1, hidden=6), cls("x", 2)
    assert a == b
    assert hash(a) == hash(b)
    assert a not in (c, ("x", 1, 5))
    assert {a, b, c} == {a, c}
    name = type(a).__qualname__
    assert repr(a) == f"{name}(name='x', port=1)"  # repr=False: hidden is not shown
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.port = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.other = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.port
    assert dataclasses.is_dataclass(type(a))
    assert [f.name for f in dataclasses.fields(a)] == ["name", "port", "hidden"]
    replaced = dataclasses.replace(a, port=3)
    assert replaced == cls("x", 3)
    assert a == cls("x", 1)
    assert dataclasses.asdict(a) == {"name": "x", "port": 1, "hidden": 5}
    assert pickle.loads(pickle.dumps(a)) == a


def test_only_frozen_classes_are_made() -> None:
    with pytest.raises(TypeError, match="frozen=True"):
        values.dataclass(frozen=False)


def test_the_core_types_use_it_and_stay_frozen_values() -> None:
    spec = PortSpec(40000, 16, 4)
    assert PortSpec.__eq__ is values._eq  # shared, not generated
    assert spec == PortSpec(40000, 16, 4)
    assert hash(spec) == hash(PortSpec(40000, 16, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.block_size = 8  # type: ignore[misc]
    request = ResourceRequest("port-range", {"blockSize": 8})
    with pytest.raises(TypeError):
        request.options["blockSize"] = 9  # type: ignore[index]  # __post_init__ froze it
    lease = ResourceLease("port-range", {"startPort": 1}, release=lambda: None)
    assert "port-range" in repr(lease)
    assert lease.hard == {"startPort": 1}
    assert PortAllocation.__repr__ is values._repr


@values.dataclass(frozen=True)
class SharedWithFactory:
    name: str
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))


@dataclasses.dataclass(frozen=True)
class GeneratedWithFactory:
    name: str
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))


@pytest.mark.parametrize(
    "cls", [SharedWithFactory, GeneratedWithFactory], ids=["shared", "generated"]
)
def test_constructs_as_a_generated_init_does(cls: Any) -> None:
    a = cls("x", ("b", "a"))
    assert (a.name, a.tags, a.extra) == ("x", ("a", "b"), {})  # __post_init__ ran
    assert cls(name="x", tags=("a", "b")) == a
    assert cls("x", tags=("a", "b")) == a
    assert cls("x").extra is not cls("x").extra  # default_factory: a fresh one each time
    bad: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),  # missing
        (("x", (), {}, 4), {}),  # too many
        (("x",), {"name": "y"}),  # twice
        (("x",), {"nope": 1}),  # unknown
        ((), {"name": "x", "nope": 1}),  # unknown, keywords only
        (("x", ()), {"nope": 1}),  # unknown beside positionals, the count made up
    ]
    for args, kwargs in bad:
        with pytest.raises(TypeError):
            cls(*args, **kwargs)
    shared = inspect.signature(SharedWithFactory).parameters
    generated = inspect.signature(GeneratedWithFactory).parameters
    assert list(shared) == list(generated) == ["name", "tags", "extra"]
    assert shared["tags"].default == generated["tags"].default == ()
    assert shared["name"].default is inspect.Parameter.empty
    assert repr(shared["extra"].default) == repr(generated["extra"].default) == "<factory>"


@pytest.mark.parametrize(
    "cls", [SharedWithFactory, GeneratedWithFactory], ids=["shared", "generated"]
)
def test_subclasses_as_a_frozen_dataclass_allows(cls: Any) -> None:
    @dataclasses.dataclass(frozen=True)
    class Frozen(cls):  # type: ignore[misc]
        more: int = 0

    assert Frozen("x", more=2).more == 2

    class Plain(cls):  # type: ignore[misc]
        pass

    plain = Plain("x")
    plain.note = 1  # not a field: allowed on a plain subclass, as dataclasses allow it
    assert plain.note == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.name = "y"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls("x").note = 1
