"""The exception tree: every class pickles and comes back equal (a core-API user's process
pool sends errors across processes), and the tree lists every class."""

from __future__ import annotations

import errno
import pickle

import pytest

import pytest_aiops
from pytest_aiops import _errors

#: One realistic instance of every class of the tree, built as the code builds it.
EXAMPLES: dict[type[_errors.AiopsError], _errors.AiopsError] = {
    _errors.AiopsError: _errors.AiopsError("something"),
    _errors.OptionError: _errors.OptionError("basePort", 'Option "basePort" must be ...'),
    _errors.UnsafeDirectoryError: _errors.UnsafeDirectoryError(
        "/tmp/x", "owned by uid 1001", option="--aiops-worktree-root"
    ),
    _errors.CommandLineError: _errors.CommandLineError("bad flag", "--lock-dir"),
    _errors.InvalidArgumentError: _errors.InvalidArgumentError("session id must be a str"),
    _errors.DiscoveryError: _errors.DiscoveryError("not JSON"),
    _errors.ProvisioningError: _errors.ProvisioningError(
        "Resource provisioning failed: no block", session_id="s", kind="port-range"
    ),
    _errors.ReleaseError: _errors.ReleaseError([("port-range", ValueError("gone"))]),
    _errors.ClosedError: _errors.ClosedError("closed"),
    _errors.GitError: _errors.GitError(
        "git failed", command=["git", "status"], returncode=128, stderr="fatal: x"
    ),
    _errors.LockError: _errors.LockError("cannot lock", lock_path="/tmp/locks/ports.lock"),
    _errors.ParentGoneError: _errors.ParentGoneError("parent gone", lock_path="/tmp/l"),
    _errors.UnsupportedPlatformError: _errors.UnsupportedPlatformError("leasing", "fcntl"),
    _errors.NoSpaceError: _errors.NoSpaceError("/dev/shm/x", "git add", setting="rootDirectory"),
    _errors.WorktreeNameError: _errors.WorktreeNameError(errno.EEXIST, "taken", "/tmp/wt"),
    _errors.PortsExhaustedError: _errors.PortsExhaustedError("no block", reason="all held"),
    _errors.ChildSplitError: _errors.ChildSplitError("cannot split"),
    _errors.RegistrationError: _errors.RegistrationError("duplicate kind"),
    _errors.UnknownKindError: _errors.UnknownKindError("no provider for 'x'"),
}


def test_the_examples_cover_every_class_of_the_tree() -> None:
    def subclasses(cls: type[_errors.AiopsError]) -> set[type[_errors.AiopsError]]:
        found = {cls}
        for sub in cls.__subclasses__():
            if sub.__module__ == _errors.__name__:
                found |= subclasses(sub)
        return found

    assert subclasses(_errors.AiopsError) == set(EXAMPLES)
    assert all(getattr(pytest_aiops, cls.__name__) is cls for cls in EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda cls: cls.__name__)
def test_every_error_pickles_and_comes_back_equal(cls: type[_errors.AiopsError]) -> None:
    error = EXAMPLES[cls]
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert str(back) == str(error)
    assert back.args == error.args
    assert {k: v for k, v in vars(back).items() if k != "failures"} == {
        k: v for k, v in vars(error).items() if k != "failures"
    }
    if isinstance(error, _errors.ReleaseError):
        assert isinstance(back, _errors.ReleaseError)
        assert [(kind, str(e)) for kind, e in back.failures] == [
            (kind, str(e)) for kind, e in error.failures
        ]
    if isinstance(error, OSError):
        assert isinstance(back, OSError)
        assert (back.errno, back.strerror, back.filename) == (
            error.errno,
            error.strerror,
            error.filename,
        )
