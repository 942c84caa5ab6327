"""Fresh equals reused: a checkout from the pool is what a new one would be, in the
repositories people really have (submodules, per-worktree config, a sparse checkout).

Each case compares a fresh checkout (``pool=False``) with the same pooled checkout handed out
again after a lease that did what tests do there: files, ``git status``, the checkout's git
dir, its config. The pool must not fall back with a warning (the suite runs with
``filterwarnings = error``), and the inode shows the checkout really was reused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .git_helpers import MakeRepo, git, run
from .snapshot_helpers import checkout_state, clone_state
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider

#: git >= 2.38.1 refuses local submodule clones unless told.
FILE_PROTOCOL = ("-c", "protocol.file.allow=always")

Act = Callable[[Path], None]


def observe(path: str, isolation: str) -> dict[str, Any]:
    """What a test sees of a checkout: files, status, git dir, config (by scope)."""
    state = checkout_state(path)
    # A split index's shared file is named by its content's hash, which holds stat data: one
    # such file, or a stale one beside it (git expires those itself), is the same state.
    state["git_dir"] = sorted(
        {"sharedindex.<sha>" if n.startswith("sharedindex.") else n for n in state["git_dir"]}
    )
    git_dir = Path(run(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    state["config"] = run(path, "config", "--list", "--show-scope").stdout
    state["config.worktree"] = (
        (git_dir / "config.worktree").read_bytes()
        if (git_dir / "config.worktree").exists()
        else None
    )
    state["skip-worktree"] = [
        line
        for line in run(path, "ls-files", "-t").stdout.splitlines()
        if not line.startswith("H ")
    ]
    if isolation == "clone":
        state.update(clone_state(path))
    return state


def assert_reused_is_fresh(
    repo: Path, tmp_path: Path, act: Act, *, isolation: str, target: str | None = None
) -> dict[str, Any]:
    """Lease fresh; then lease, ``act``, release and lease again from the pool, twice (the
    first restore asks git, the second sweeps what changed since a stamp): each reused
    checkout equals the fresh one. Returns the fresh checkout's state."""
    options: dict[str, Any] = {"isolation": isolation}
    if target:
        options["targetPath"] = target
    fresh = lease(provider(tmp_path / "fresh", pool=False), repo, "fresh", **options)
    expected = observe(fresh.hard["worktreePath"], isolation)
    fresh.release()
    prov = provider(tmp_path / "pooled")
    first = lease(prov, repo, "module-1", **options)
    path = first.hard["worktreePath"]
    inode = os.stat(path).st_ino
    assert observe(path, isolation) == expected
    act(Path(path))
    first.release()
    for round_ in range(2):
        again = lease(prov, repo, f"module-{round_ + 2}", **options)
        path = again.hard["worktreePath"]
        assert os.stat(path).st_ino == inode  # really the pooled checkout
        assert observe(path, isolation) == expected
        act(Path(path))  # what the test did works as well in a reused checkout
        again.release()
    return expected


# -- submodules -----------------------------------------------------------------------------


def repo_with_submodule(make_repo: MakeRepo) -> Path:
    library = make_repo({"lib.txt": "library\n", "deep/inner.txt": "inner\n"}, name="library")
    repo = make_repo({"top.txt": "top\n", "pkg/a.txt": "a\n"}, name="user")
    git(repo, *FILE_PROTOCOL, "submodule", "add", "-q", str(library), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add a submodule")
    return repo


def init_submodules(path: Path) -> None:
    git(path, *FILE_PROTOCOL, "submodule", "update", "--init", "-q")
    assert (path / "vendor" / "lib" / "deep" / "inner.txt").read_text() == "inner\n"
    assert git(path, "status", "--porcelain") == ""


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_a_submodule_a_module_initialised_is_gone_from_the_reused_checkout(
    make_repo: MakeRepo, tmp_path: Path, isolation: str
) -> None:
    repo = repo_with_submodule(make_repo)
    expected = assert_reused_is_fresh(repo, tmp_path, init_submodules, isolation=isolation)
    assert "vendor/lib" in expected["files"]
    assert not [name for name in expected["files"] if name.startswith("vendor/lib/")]
    assert not [name for name in expected["git_dir"] if name.startswith("modules")]


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_nested_repositories_and_files_in_an_uninitialised_submodule_are_swept(
    make_repo: MakeRepo, tmp_path: Path, isolation: str
) -> None:
    repo = repo_with_submodule(make_repo)

    def nest(path: Path) -> None:
        git(path / "pkg", "init", "-q")  # a repository inside a tracked directory
        (path / "pkg" / "new.txt").write_text("new\n")
        git(path / "pkg", "add", "new.txt")
        (path / "vendor" / "lib" / "copied.txt").write_text("no .git here\n")
        os.makedirs(path / "vendor" / "lib" / "sub")
        (path / "other").mkdir()
        git(path / "other", "init", "-q")

    assert_reused_is_fresh(repo, tmp_path, nest, isolation=isolation)


def test_a_submodule_at_another_commit_is_gone_after_switching(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = repo_with_submodule(make_repo)
    git(repo, "tag", "with-submodule")
    git(repo, "rm", "-q", "vendor/lib")
    git(repo, "commit", "-q", "-m", "drop the submodule")
    fresh = lease(provider(tmp_path / "fresh", pool=False), repo, "fresh")
    expected = observe(fresh.hard["worktreePath"], "worktree")
    fresh.release()
    prov = provider(tmp_path / "pooled")
    old = lease(prov, repo, "old", baseRef="with-submodule")
    inode = os.stat(old.hard["worktreePath"]).st_ino
    init_submodules(Path(old.hard["worktreePath"]))
    old.release()
    new = lease(prov, repo, "new")
    assert os.stat(new.hard["worktreePath"]).st_ino == inode
    assert observe(new.hard["worktreePath"], "worktree") == expected
    new.release()


def test_runs_whose_modules_initialise_submodules_reuse_without_a_warning(
    pytester: pytest.Pytester, make_repo: MakeRepo
) -> None:
    """Two runs in a row, each module initialising the submodule in its (pooled) worktree;
    no "could not restore pooled checkout" warning (``filterwarnings = error``)."""
    library = make_repo({"lib.txt": "library\n"}, name="library")
    repo = pytester.path
    git(repo, "init", "-q", "-b", "main")
    module = """
        import subprocess

        def test_initialise(git_worktree):
            sub = git_worktree.path / "vendor" / "lib"
            assert sub.is_dir() and not list(sub.iterdir())  # as in a fresh checkout
            git = ["git", "-c", "protocol.file.allow=always", "submodule", "update", "--init"]
            subprocess.run([*git, "-q"], cwd=git_worktree.path, check=True)
            assert (sub / "lib.txt").read_text() == "library\\n"
            status = subprocess.run(["git", "status", "--porcelain"], cwd=git_worktree.path,
                                    capture_output=True, text=True, check=True)
            assert status.stdout == ""
        """
    pytester.makepyfile(test_a=module, test_b=module, test_c=module)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    # runpytest_subprocess puts its basetemp (runpytest-*) and its stdout/stderr files in the
    # repository: ignored, so the working state (on by default) does not carry them along.
    (repo / ".gitignore").write_text("__pycache__/\nrunpytest-*\nstdout\nstderr\n")
    git(repo, *FILE_PROTOCOL, "submodule", "add", "-q", str(library), "vendor/lib")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tests and a submodule")
    for _ in range(2):
        result = pytester.runpytest_subprocess("-p", "no:benchmark", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=3)
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_a_submodule_parent_replaced_by_a_symlink_is_not_followed(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """A test replaces ``vendor/`` (the submodule's parent) with a symlink to a directory
    outside: restoring empties nothing and changes no mode there (found in review)."""
    repo = repo_with_submodule(make_repo)
    outside = tmp_path / "outside"
    (outside / "lib").mkdir(parents=True)
    (outside / "lib" / "keep.txt").write_text("not ours\n")
    (outside / "lib").chmod(0o500)

    def replace_parent(path: Path) -> None:
        vendor = path / "vendor"
        if vendor.is_symlink():
            vendor.unlink()
        else:
            (vendor / "lib").rmdir()
            vendor.rmdir()
        vendor.symlink_to(outside)

    assert_reused_is_fresh(repo, tmp_path, replace_parent, isolation="worktree")
    assert oct((outside / "lib").stat().st_mode & 0o777) == oct(0o500)
    assert (outside / "lib" / "keep.txt").read_text() == "not ours\n"


# -- per-worktree config ----------------------------------------------------------------------


def repo_with_worktree_config(make_repo: MakeRepo) -> Path:
    repo = make_repo({"a.txt": "one\ntwo\n", "b/c.txt": "three\n", "d.bin": "x\n"})
    git(repo, "config", "extensions.worktreeConfig", "true")
    git(repo, "config", "--worktree", "core.autocrlf", "true")
    return repo


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_per_worktree_config_is_the_same_fresh_and_reused(
    make_repo: MakeRepo, tmp_path: Path, isolation: str
) -> None:
    repo = repo_with_worktree_config(make_repo)

    def configure(path: Path) -> None:
        git(path, "config", "--worktree", "core.autocrlf", "false")
        git(path, "config", "--worktree", "user.name", "a test")
        (path / "a.txt").write_text("changed\n")

    expected = assert_reused_is_fresh(repo, tmp_path, configure, isolation=isolation)
    assert expected["status"] == ""
    if isolation == "worktree":
        # As git itself gives a new worktree: the user's per-worktree config (autocrlf).
        assert "worktree\tcore.autocrlf=true" in expected["config"].splitlines()
        crlf = hashlib.sha256(b"one\r\ntwo\r\n").hexdigest()[:16]
        assert expected["files"]["a.txt"][2] == crlf  # written as the user's checkout would
        assert "sparse" not in (expected["config.worktree"] or b"").decode().lower()


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_a_split_index_is_the_same_fresh_and_reused(
    make_repo: MakeRepo, tmp_path: Path, isolation: str
) -> None:
    """``core.splitIndex``: the checkout's index names a ``sharedindex.<sha>`` file beside it;
    a restore that dropped it left an index git cannot open (found in review)."""
    repo = make_repo({"a.txt": "one\n", "b/c.txt": "two\n"})
    git(repo, "config", "core.splitIndex", "true")
    git(repo, "update-index", "--split-index")

    def edit(path: Path) -> None:
        (path / "a.txt").write_text("changed\n")
        (path / "new.txt").write_text("new\n")
        git(path, "add", "-A")

    expected = assert_reused_is_fresh(repo, tmp_path, edit, isolation=isolation)
    assert expected["status"] == ""


# -- sparse checkouts ---------------------------------------------------------------------------


def sparse_repo(make_repo: MakeRepo, how: str = "sparse-checkout") -> Path:
    """A repository whose own checkout is sparse to ``small/``: by ``git sparse-checkout``
    (per-worktree config), or the old way (``core.sparseCheckout`` in the shared config)."""
    repo = make_repo({"top.txt": "top\n", "big/x.txt": "x\n", "small/y.txt": "y\n"})
    if how == "sparse-checkout":
        git(repo, "sparse-checkout", "set", "small")
    else:
        git(repo, "config", "core.sparseCheckout", "true")
        (repo / ".git" / "info").mkdir(exist_ok=True)
        (repo / ".git" / "info" / "sparse-checkout").write_text("/top.txt\n/small/\n")
        git(repo, "read-tree", "-mu", "HEAD")
    assert not (repo / "big").exists()
    return repo


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
@pytest.mark.parametrize("target", [None, "big"])
@pytest.mark.parametrize("how", ["sparse-checkout", "core.sparseCheckout"])
def test_the_users_sparse_checkout_is_not_inherited(
    make_repo: MakeRepo, tmp_path: Path, isolation: str, target: str | None, how: str
) -> None:
    repo = sparse_repo(make_repo, how)
    user_before = (run(repo, "ls-files", "-t").stdout, (repo / ".git" / "config").read_text())

    def make_sparse(path: Path) -> None:
        if how == "sparse-checkout":
            git(path, "sparse-checkout", "set", "--no-cone", "/top.txt")
        else:  # by hand: `sparse-checkout set` would turn on worktreeConfig in the user's config
            git(path, "update-index", "--skip-worktree", "big/x.txt", "small/y.txt")
            for name in ("big/x.txt", "small/y.txt"):
                if (path / name).exists():
                    (path / name).unlink()
                    (path / name).parent.rmdir()
        assert not (path / "big" / "x.txt").exists()
        assert not (path / "small").exists()

    expected = assert_reused_is_fresh(
        repo, tmp_path, make_sparse, isolation=isolation, target=target
    )
    assert expected["status"] == ""
    if target is None:
        assert expected["skip-worktree"] == []  # a full checkout
        assert {"big/x.txt", "small/y.txt", "top.txt"} <= set(expected["files"])
    else:
        assert "big/x.txt" in expected["files"]
        assert "small" not in expected["files"]
    assert (run(repo, "ls-files", "-t").stdout, (repo / ".git" / "config").read_text()) == (
        user_before
    )


def test_git_status_in_a_reused_checkout_of_a_sparse_user_is_clean(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = sparse_repo(make_repo)
    prov = provider(tmp_path / "pooled")
    for name in ("one", "two"):
        held = lease(prov, repo, name)
        path = held.hard["worktreePath"]
        result = subprocess.run(
            ["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True, check=True
        )
        assert result.stdout == ""
        assert (Path(path) / "big" / "x.txt").read_text() == "x\n"
        held.release()
