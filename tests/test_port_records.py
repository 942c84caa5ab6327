"""Lease records (``_ports/records.py``): a record is trusted only when the file's owner is the
uid in its name.

The lock directory is shared by every user of the machine, so anyone can create a file with
any name in ``leases/``: a file claiming another user's uid in its name is not that user's
record, and a record file of someone else's name must not be read as theirs. These tests make
the mismatch for real: as root, ``os.chown`` on files in a private lock directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_aiops import PortRangeProviderConfig, ResourceLease
from pytest_aiops._ports.provider import PortRangeProvider
from pytest_aiops._ports.records import holders_of, read_records

from .process_helpers import child_env

#: A uid no account on the machine has (any other than ours would do).
OTHER_UID = 4242
#: Nothing is bound (probe off, private lock dir): the range only names the record.
BASE, SIZE = 4992, 8  # 4992-4999: a range no other test uses

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (chown to another uid)"
)


@pytest.fixture
def lease(lock_dir: Path) -> Iterator[ResourceLease]:
    """A live lease of ours in ``lock_dir``: its record is ``<start>-<end>.top.<our uid>.json``."""
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False))
    held = provider.provision(
        session_id="mine",
        workspace_root=str(lock_dir),
        options={"basePort": BASE, "blockSize": SIZE, "blockCount": 1},
    )
    yield held
    held.release()


def _status_leases(lock_dir: Path) -> list[tuple[int, int, str]]:
    """(start, end, session) of every live lease ``pytest-aiops status --json`` lists."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest_aiops", "status", "--json", "--lock-dir", str(lock_dir)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [
        (entry["startPort"], entry["endPort"], entry["sessionId"])
        for entry in json.loads(result.stdout)["leases"]
    ]


def _listed(lock_dir: Path) -> list[str]:
    return sorted(os.path.basename(r.path) for r in read_records(str(lock_dir)))


def test_our_record_is_trusted_while_we_own_it(lock_dir: Path, lease: ResourceLease) -> None:
    (record,) = read_records(str(lock_dir))
    assert os.path.basename(record.path) == f"{BASE}-{BASE + SIZE - 1}.top.0.json"
    assert record.holder_alive()
    assert [r.session_id for r in holders_of(str(lock_dir), BASE)] == ["mine"]
    assert _status_leases(lock_dir) == [(BASE, BASE + SIZE - 1, "mine")]


def test_a_record_owned_by_another_uid_than_its_name_says_is_not_trusted(
    lock_dir: Path, lease: ResourceLease
) -> None:
    (record,) = read_records(str(lock_dir))
    os.chown(record.path, OTHER_UID, -1)  # same name (uid 0), same content, someone else's
    assert _listed(lock_dir) == []
    assert holders_of(str(lock_dir), BASE) == []
    assert _status_leases(lock_dir) == []
    os.chown(record.path, 0, -1)  # ours again: the very same file is read
    assert _listed(lock_dir) == [os.path.basename(record.path)]


def test_a_record_named_for_another_uid_is_trusted_only_if_that_uid_owns_it(
    lock_dir: Path, lease: ResourceLease
) -> None:
    """A file planted under another user's name (here: root's file named for uid 4242) is
    not that user's record; the same file owned by that user is."""
    (record,) = read_records(str(lock_dir))
    planted = Path(record.path).with_name(f"{BASE}-{BASE + SIZE - 1}.top.{OTHER_UID}.json")
    planted.write_bytes(Path(record.path).read_bytes())  # a live lease's content, verbatim
    os.chown(record.path, OTHER_UID, -1)  # and the genuine name out of the way
    assert _listed(lock_dir) == []
    assert holders_of(str(lock_dir), BASE) == []
    assert _status_leases(lock_dir) == []
    os.chown(planted, OTHER_UID, -1)  # now the file is that user's: trusted
    assert _listed(lock_dir) == [planted.name]
    assert [r.session_id for r in holders_of(str(lock_dir), BASE)] == ["mine"]
    assert _status_leases(lock_dir) == [(BASE, BASE + SIZE - 1, "mine")]
