"""``struct flock`` packed with :mod:`struct` is byte for byte what ctypes lays out.

``_ports/locks.py`` packs the lock requests with :mod:`struct` (importing ctypes cost every
run that leases ports more than the lease, issue 23); ctypes applies the C ABI's layout and
padding, so it is the reference here.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys

import pytest

from pytest_aiops._ports.locks import _flock, _flock_type, _random_id


class _LinuxFlock(ctypes.Structure):
    _fields_ = (
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    )


class _BsdFlock(ctypes.Structure):
    _fields_ = (
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
    ) + ((("l_sysid", ctypes.c_int),) if sys.platform.startswith("freebsd") else ())


@pytest.mark.parametrize("kind", [fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK])
@pytest.mark.parametrize(("start", "end"), [(0, 0), (12000, 12031), (2**40, 2**40 + 7)])
def test_flock_is_laid_out_as_the_c_abi_says(kind: int, start: int, end: int) -> None:
    layout = _LinuxFlock if sys.platform.startswith("linux") else _BsdFlock
    value = layout()
    value.l_type, value.l_whence = kind, os.SEEK_SET
    value.l_start, value.l_len = start, end - start + 1
    assert _flock(kind, start, end) == bytes(value)
    assert _flock_type(bytes(value)) == kind


def test_random_ids_have_the_bits_asked_for() -> None:
    ids = {_random_id(47) for _ in range(200)}
    assert all(0 <= lease_id < 2**47 for lease_id in ids)
    assert len(ids) == 200  # 47 random bits: a repeat in 200 draws would be a broken source
    assert max(ids).bit_length() > 40
