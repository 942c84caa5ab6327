"""Checkout records as earlier versions wrote them: the on-disk format the tests hold to."""

from __future__ import annotations

#: A pooled record as the previous version wrote it (keys and value types are the format).
POOLED_RECORD: dict[str, object] = {
    "claim": None,
    "commit": "a" * 40,
    "commonDir": "/r/.git",
    "createdAt": 1.5,
    "dev": 2049,
    "filledAt": 100.25,
    "gitDir": "/r/.git/worktrees/aiops-00",
    "gitSession": [4242, 777],
    "handedAt": 100.5,
    "host": "h",
    "indexId": [123, 456],
    "ino": 99,
    "isolation": "worktree",
    "objectFormat": "sha1",
    "path": "/root/.pytest-aiops/.aiops-00.pooled",
    "pid": 7,
    "releasedAt": 200.0,
    "repoRoot": "/r",
    "sessionId": "s",
    "settled": True,
    "stamped": False,
    "state": "pooled",
    "targetPath": None,
    "token": "aiops-00",
}
