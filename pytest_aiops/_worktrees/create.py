"""Making a fresh checkout of a commit (linked worktree or private clone), and what "fresh" is.

A checkout's own git metadata (HEAD, reflog, config of a clone, the sparse patterns) is
defined here once, as what a fresh one holds: creation writes it, and a restore
(:mod:`.restore`) puts it back through the same ``reset_*_metadata`` functions, so a reused
checkout cannot drift from a new one.

Two isolation levels:

- ``"worktree"``: ``git worktree add --detach``. Shares objects, refs, tags, ``refs/stash``,
  config and hooks with the user's repository; registered in ``<common-dir>/worktrees/<reg>``.
- ``"clone"``: a repository of its own whose object store borrows the user's through
  ``objects/info/alternates`` (what ``git clone --shared`` does), with no refs copied, its
  own config/stash/hooks, an ``origin`` remote that can be fetched but not pushed to, and
  registered nowhere in the user's repository.

Sparse checkouts (``targetPath``) are made *without* ``git sparse-checkout init``: in a
linked worktree that command sets ``extensions.worktreeConfig = true`` in the user's shared
``.git/config`` (checked with git 2.39), and the user's config must never change. Instead we
write the cone patterns to the checkout's own ``info/sparse-checkout`` and pass
``-c core.sparseCheckout=true -c core.sparseCheckoutCone=true`` to our own commands; the
resulting skip-worktree bits in the checkout's index keep ``git status`` clean for the test.
A clone keeps the two settings in its own config.

The user's own sparse checkout is not inherited: ``git worktree add`` copies the current
worktree's sparse patterns and, with ``extensions.worktreeConfig``, its ``config.worktree``
(git >= 2.36). A checkout is full unless ``targetPath`` asks otherwise, so the copied
patterns are dropped and the per-worktree config is the user's without the sparse keys
(:func:`worktree_config`), the same whether fresh or restored. Submodules are never
initialised in a fresh checkout: each is an empty directory, and the checkout's git dir has
no ``modules/``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable

from .._errors import GitError, NoSpaceError
from .files import empty_directory, read_bytes, remove_tree, write_text
from .git import git_failure, is_transient, run_git, split_nul
from .locate import RepoInfo
from .repository import git_dir_of, remove_registrations

SPARSE_FLAGS = ("-c", "core.sparseCheckout=true", "-c", "core.sparseCheckoutCone=true")

#: Where a clone's pushes go: no git transport exists for this scheme, so ``git push`` fails.
PUSH_DISABLED = "pytest-aiops-push-disabled::"

#: Called with the pid of a git that writes into a checkout, as soon as it started.
OnStart = Callable[[int], None] | None


def cone_patterns(target: str) -> str:
    """What ``git sparse-checkout set --cone <target>`` writes (root files are included)."""
    lines = ["/*", "!/*/"]
    parts = target.split("/")
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        lines += [f"/{prefix}/", f"!/{prefix}/*/"]
    lines.append(f"/{target}/")
    return "\n".join(lines) + "\n"


def in_cone(files: set[str], dirs: set[str], target: str) -> tuple[set[str], set[str]]:
    """What a cone-mode sparse checkout of ``target`` holds of a commit's tree: the files
    at the top and in each directory leading to ``target``, and everything under it."""
    parts = target.split("/")
    ancestors = {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    inside = target + "/"
    kept_dirs = {d for d in dirs if d in ancestors or d.startswith(inside)}
    kept_files = {
        f
        for f in files
        if f.startswith(inside) or f.rpartition("/")[0] in ({""} | ancestors) - {target}
    }
    return kept_files, kept_dirs


def _quote(value: str) -> str:
    """A git-config value/subsection in double quotes (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def clone_config(info: RepoInfo, *, sparse: bool) -> str:
    """The whole ``.git/config`` of a clone; rewritten verbatim on every restore."""
    lines = [
        "[core]",
        f"\trepositoryformatversion = {0 if info.object_format == 'sha1' else 1}",
        "\tfilemode = true",
        "\tbare = false",
        "\tlogallrefupdates = true",
    ]
    if info.object_format != "sha1":
        lines += ["[extensions]", f"\tobjectformat = {info.object_format}"]
    if sparse:
        lines += ["\tsparseCheckout = true", "\tsparseCheckoutCone = true"]
        if info.object_format != "sha1":  # keep the [core] keys in [core]
            lines = [*lines[:5], *lines[-2:], *lines[5:-2]]
    lines += [
        '[remote "origin"]',
        f"\turl = {_quote(info.repo_root)}",
        "\tfetch = +refs/heads/*:refs/remotes/origin/*",
        f"\tpushurl = {_quote(PUSH_DISABLED)}",
        # An explicit `git push /path/to/user/repo` is rewritten to the dead URL as well.
        f"[url {_quote(PUSH_DISABLED)}]",
        *(f"\tpushInsteadOf = {_quote(url)}" for url in _push_spellings(info)),
    ]
    return "\n".join(lines) + "\n"


def _push_spellings(info: RepoInfo) -> list[str]:
    """The ways a test is likely to name the user's repository in ``git push``.

    ``pushInsteadOf`` matches by prefix, so each is listed as given and resolved through
    symlinks, as a path and as a ``file://`` URL. This stops accidents, not a test set on
    reaching the user's repository: an odd spelling (``/a//b``) is not matched, and a test
    could as well run ``git -C <repo>`` there.
    """
    bases = {info.repo_root, info.common_dir}
    bases |= {os.path.realpath(base) for base in bases}
    return sorted({*bases, *("file://" + base for base in bases)})


#: Keys of the user's ``config.worktree`` a checkout of ours does not take: git itself drops
#: ``core.bare`` and ``core.worktree`` when it copies the file; the sparse ones would make
#: the checkout sparse (ours are passed on the command line, see :data:`SPARSE_FLAGS`).
_NOT_INHERITED = ("core.bare", "core.worktree", "core.sparsecheckout", "core.sparsecheckoutcone")

# The user's config.worktree (bytes) -> what a checkout of ours holds; filtered by git once.
_WORKTREE_CONFIGS: dict[bytes, bytes] = {}


def user_git_dir(info: RepoInfo) -> str:
    """The git dir of the user's checkout the workspace is in."""
    return info.git_dir or info.common_dir


def worktree_config(info: RepoInfo) -> bytes | None:
    """The ``config.worktree`` a fresh linked worktree of ours holds (``None``: none).

    What ``git worktree add`` copies from the user's checkout (with
    ``extensions.worktreeConfig``, e.g. a per-worktree ``core.autocrlf``), without the keys
    of :data:`_NOT_INHERITED`. Read anew at every creation and restore (a file read; git
    filters each distinct content once per process), so fresh and reused always agree.
    """
    raw = read_bytes(os.path.join(user_git_dir(info), "config.worktree"))
    if not raw:
        return None
    filtered = _WORKTREE_CONFIGS.get(raw)
    if filtered is None:
        with tempfile.TemporaryDirectory(prefix="pytest-aiops-config-") as scratch:
            copy = os.path.join(scratch, "config.worktree")
            with open(copy, "wb") as handle:
                handle.write(raw)
            keys = run_git(["config", "--file", copy, "--name-only", "--list", "-z"], check=False)
            for key in sorted({k.lower() for k in split_nul(keys.stdout)}):
                if key in _NOT_INHERITED:
                    run_git(["config", "--file", copy, "--unset-all", key], check=False)
            filtered = read_bytes(copy)
        _WORKTREE_CONFIGS[raw] = filtered
    return filtered


def reset_worktree_config(info: RepoInfo, git_dir: str, target: str | None) -> bool:
    """Give a linked worktree's git dir the ``config.worktree`` and ``info/`` of a fresh one.

    ``info/sparse-checkout`` holds our cone patterns with ``target``, and nothing else is in
    ``info/``; without, there is no ``info/``. Written before anything is checked out (the
    per-worktree config decides how files are written: ``core.autocrlf``). Returns whether a
    sparse-checkout file was there without ``target`` (the test made the checkout sparse).
    """
    config = os.path.join(git_dir, "config.worktree")
    wanted = worktree_config(info)
    if wanted is None:
        remove_tree(config)
    elif read_bytes(config) != wanted:
        with open(config, "wb") as handle:
            handle.write(wanted)
    info_dir = os.path.join(git_dir, "info")
    if not target:
        was_sparse = os.path.lexists(info_dir)
        remove_tree(info_dir)
        return was_sparse
    for name in os.listdir(info_dir) if os.path.isdir(info_dir) else ():
        if name != "sparse-checkout":
            remove_tree(os.path.join(info_dir, name))
    write_text(os.path.join(info_dir, "sparse-checkout"), cone_patterns(target))
    return False


#: ``-c`` flags under which a checkout clears every skip-worktree bit of a non-sparse one,
#: with :data:`FULL_PATTERNS` as its sparse-checkout file (what ``git sparse-checkout
#: disable`` does); a plain checkout keeps the bits a test's ``git sparse-checkout`` set.
UNSPARSE_FLAGS = ("-c", "core.sparseCheckout=true", "-c", "core.sparseCheckoutCone=false")
FULL_PATTERNS = "/*\n"


def create_worktree(
    info: RepoInfo, commit: str, path: str, target: str | None, on_start: OnStart = None
) -> str:
    """``git worktree add --detach path commit`` (``path`` an empty dir we made); its git dir.

    Retried on transient lock errors; before a retry whatever the failed attempt left in
    ``path`` and its registration is removed again, so the retry starts from an empty dir.
    When the user's checkout is sparse (git would copy its patterns and check out sparse),
    nothing is checked out until :func:`reset_worktree_config` made it a full checkout.
    """
    user_sparse = os.path.exists(os.path.join(user_git_dir(info), "info", "sparse-checkout"))
    args = ["-C", info.repo_root, "worktree", "add", "--detach", "-q"]
    if target or user_sparse:
        args.append("--no-checkout")
    args += [path, commit]
    for attempt in range(6):
        result = run_git(args, check=False, on_start=on_start)
        if result.returncode == 0:
            break
        if attempt == 5 or not is_transient(result.stderr):
            raise git_failure(args, result)
        remove_registrations(info.common_dir, token=os.path.basename(path))
        empty_directory(path)
    git_dir = git_dir_of(path)
    reset_worktree_config(info, git_dir, target)
    if target or user_sparse:
        # Same command `worktree add` runs itself without --no-checkout: sparse to our
        # target, or full (no index yet, so no skip-worktree bit to clear).
        flags = SPARSE_FLAGS if target else ("-c", "core.sparseCheckout=false")
        run_git(["-C", path, *flags, "reset", "--hard", "-q"], on_start=on_start)
    return git_dir


# What git says when it could not write a file of a checkout (it names no errno for a
# failed write(2): "unable to write file X", then "Could not reset index file").
_WRITE_FAILED = (
    "No space left on device",
    "unable to write file",
    "unable to create file",
    "unable to write new index file",
    "Could not reset index file",
)


def no_space(
    error: BaseException, root: str, info: RepoInfo, commit: str, target: str | None
) -> NoSpaceError | None:
    """A :class:`NoSpaceError` if ``error`` (making a checkout of ``commit`` under ``root``)
    came from a full filesystem, else ``None``.

    Our own writes say so by errno. git says it only when open(2) fails; for a failed
    write(2) it prints "unable to write file" per file, so then the tree's size (rounded up
    to whole blocks) and file count are compared with what ``statvfs`` says is free: only a
    filesystem too small for the checkout is reported as full.
    """
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return NoSpaceError(str(error.filename or root))
    if not isinstance(error, GitError) or not any(m in error.stderr for m in _WRITE_FAILED):
        return None
    try:
        fs = os.statvfs(root)
    except OSError:
        return None
    free, block = fs.f_bavail * fs.f_frsize, fs.f_frsize or 4096
    listing = run_git(["-C", info.repo_root, "ls-tree", "-r", "-l", "-z", commit], check=False)
    sizes: dict[str, int] = {}
    for item in split_nul(listing.stdout):
        meta, _, name = item.partition("\t")
        size = meta.split()[-1]
        if size.isdigit():
            sizes[name] = int(size)
    if target:
        names, _dirs = in_cone(set(sizes), set(), target)
        sizes = {name: sizes[name] for name in names}
    needed = sum(-(-size // block) * block for size in sizes.values())
    if fs.f_files and fs.f_favail < len(sizes):
        return NoSpaceError(root, f"{len(sizes)} files to check out, {fs.f_favail} inodes free")
    if "No space left on device" in error.stderr or needed > free:
        detail = f"the {len(sizes)} files of {commit[:12]} need about {needed / 2**20:.1f} MiB"
        return NoSpaceError(root, f"{detail}, {free / 2**20:.1f} MiB are free there")
    return None


def create_clone(
    info: RepoInfo, commit: str, path: str, target: str | None, on_start: OnStart = None
) -> str:
    """A private repository at ``path`` (an empty dir we made) checked out at ``commit``."""
    # --template=: no sample hooks, no info/exclude, no description: nothing a test could
    # mistake for the user's, and nothing to restore later.
    run_git(["init", "-q", "--template=", path])
    git_dir = os.path.join(path, ".git")
    reset_clone_metadata(info, git_dir, commit=None, target=target)
    flags = SPARSE_FLAGS if target else ()
    run_git(["-C", path, *flags, "checkout", "-q", "-f", "--detach", commit], on_start=on_start)
    return git_dir


def reset_clone_metadata(
    info: RepoInfo, git_dir: str, *, commit: str | None, target: str | None
) -> None:
    """Make a clone's ``.git`` what a fresh one holds, keeping its index (and objects/pack dir).

    Everything a test can add to a clone's repository lives here: refs, tags, stash,
    reflogs, config, hooks, its own objects. The user's objects are reached through
    ``alternates``, so the clone's own object store only ever holds what tests wrote.
    """
    keep = {"index", "objects", "HEAD", "logs"}
    for name in os.listdir(git_dir):
        if name not in keep:
            remove_tree(os.path.join(git_dir, name))
    objects = os.path.join(git_dir, "objects")
    os.makedirs(objects, exist_ok=True)
    for name in os.listdir(objects):
        remove_tree(os.path.join(objects, name))
    for sub in ("info", "pack"):
        os.makedirs(os.path.join(objects, sub), exist_ok=True)
    write_text(
        os.path.join(objects, "info", "alternates"), os.path.join(info.common_dir, "objects") + "\n"
    )
    for sub in ("heads", "tags"):
        os.makedirs(os.path.join(git_dir, "refs", sub), exist_ok=True)
    write_text(os.path.join(git_dir, "config"), clone_config(info, sparse=bool(target)))
    shallow = os.path.join(info.common_dir, "shallow")
    if os.path.isfile(shallow):  # a shallow user repo: its grafts are needed to walk history
        shutil.copyfile(shallow, os.path.join(git_dir, "shallow"))
    if target:
        write_text(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
    if commit is not None:
        write_text(os.path.join(git_dir, "HEAD"), commit + "\n")
    _trim_reflog(git_dir, commit)


def reset_worktree_metadata(info: RepoInfo, git_dir: str, commit: str, target: str | None) -> None:
    """Make a linked worktree's private git dir hold what a fresh ``worktree add`` leaves.

    Fresh: HEAD, ORIG_HEAD, commondir, gitdir, index, logs/HEAD, plus what
    :func:`reset_worktree_config` writes (config.worktree, info/sparse-checkout). A test can
    add rebase/merge/bisect state, per-worktree refs, submodules' ``modules/``...: all
    dropped. The reflog is cut to one line. Kept too, because the index or git needs them:
    a split index's ``sharedindex.<sha>`` files (``core.splitIndex``; the kept ``index``
    names one) and a reftable repository's ``reftable/`` (git >= 2.45).
    """
    keep = {"HEAD", "ORIG_HEAD", "commondir", "gitdir", "index", "logs", "info", "reftable"}
    keep.add("config.worktree")
    for name in os.listdir(git_dir):
        if name not in keep and not name.startswith("sharedindex."):
            remove_tree(os.path.join(git_dir, name))
    reset_worktree_config(info, git_dir, target)
    write_text(os.path.join(git_dir, "ORIG_HEAD"), commit + "\n")
    _trim_reflog(git_dir, commit)


def _trim_reflog(git_dir: str, commit: str | None = None) -> None:
    """Cut the HEAD reflog to its first line, as a fresh checkout has, naming ``commit``.

    A pooled checkout may have been created at another commit: ``HEAD@{0}`` must be the
    commit it now holds, as in a fresh one (``0000... <commit> <ident> <time>\t<msg>``).
    """
    logs = os.path.join(git_dir, "logs")
    if not os.path.isdir(logs):
        return
    for name in os.listdir(logs):
        if name != "HEAD":
            remove_tree(os.path.join(logs, name))
    head_log = os.path.join(logs, "HEAD")
    with contextlib.suppress(FileNotFoundError):
        with open(head_log, "rb") as handle:
            first = handle.readline()
        parts = first.split(b" ", 2)
        if commit is not None and len(parts) == 3:
            first = b" ".join([b"0" * len(commit), commit.encode(), parts[2]])
        with open(head_log, "wb") as handle:
            handle.write(first)
