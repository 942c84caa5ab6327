"""Git operations on one checkout: create (worktree or private clone), restore, remove.

Nothing here decides *which* checkout to use or who owns it (that is
:mod:`pytest_aiops._worktrees.store`); this module only knows how to make a directory hold
exactly ``commit``'s tree and how to take it apart again without touching anything else.

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
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._errors import GitError, NoSpaceError, OptionError
from .git import is_transient, run_git, run_git_parallel, summarize

WORKTREE = "worktree"
CLONE = "clone"
ISOLATIONS = (WORKTREE, CLONE)

SPARSE_FLAGS = ("-c", "core.sparseCheckout=true", "-c", "core.sparseCheckoutCone=true")

#: Where a clone's pushes go: no git transport exists for this scheme, so ``git push`` fails.
PUSH_DISABLED = "pytest-aiops-push-disabled::"

# Read once: the mode a fresh checkout gives a directory it creates (0o777 & ~umask).
# os.umask can only be read by setting it; do it at import, before any thread exists.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


#: Called with the pid of a git that writes into a checkout, as soon as it started.
OnStart = Callable[[int], None] | None


@dataclass(frozen=True)
class RepoInfo:
    """The user's repository as git sees it from the workspace."""

    repo_root: str
    common_dir: str
    object_format: str


# workspace root -> (its repository, its own git dir): where a workspace's repository is
# does not change during a run, so the `git rev-parse` that finds it runs once per workspace.
_REPOS: dict[str, tuple[RepoInfo, str]] = {}

_HEX = frozenset("0123456789abcdef")


def _quick_head(git_dir: str, common_dir: str) -> str | None:
    """The commit ``HEAD`` names, read from the ref files; ``None`` if git must be asked.

    Only the plain cases: a detached HEAD, or HEAD -> a branch stored as a loose ref or in
    packed-refs (both written by atomic rename). Anything else (reftable, a symref chain,
    an unborn branch) goes to ``git rev-parse``.
    """
    if os.path.exists(os.path.join(common_dir, "reftable")):
        return None
    head = _read(os.path.join(git_dir, "HEAD")).strip()
    if head.startswith("ref: refs/heads/"):
        name = head[len("ref: ") :]
        value = _read(os.path.join(common_dir, name)).strip()
        if not value:
            for line in _read_bytes(os.path.join(common_dir, "packed-refs")).splitlines():
                sha, _, ref = line.decode("utf-8", "surrogateescape").partition(" ")
                if ref == name:
                    value = sha
                    break
        head = value
    if len(head) in (40, 64) and set(head) <= _HEX:
        return head
    return None


def inspect_repo(workspace_root: str, base_ref: str) -> tuple[RepoInfo, str]:
    """The repository containing ``workspace_root`` and the commit ``base_ref`` names.

    One ``git rev-parse`` answers both: it prints the toplevel, common dir, git dir and
    object format, then the commit, or exits 1 (bad ref) / 128 (not a repository). Later
    calls for the same workspace with ``base_ref="HEAD"`` read HEAD's ref files instead.
    """
    if base_ref.startswith("-"):
        # rev-parse of 2.39 has no --end-of-options; never let a ref become an option.
        raise OptionError("baseRef", f'Option "baseRef" must name a commit, not {base_ref!r}.')
    cached = _REPOS.get(workspace_root)
    if cached is not None and base_ref == "HEAD" and os.path.isdir(cached[0].common_dir):
        commit = _quick_head(cached[1], cached[0].common_dir)
        if commit is not None:
            return cached[0], commit
    if not os.path.isdir(workspace_root):
        raise GitError(
            f"workspace root {workspace_root!r} is not a directory; the git-worktree provider "
            "needs a workspace inside a git repository",
            command=["git"],
            returncode=None,
            stderr="",
        )
    result = run_git(
        [
            "-C",
            workspace_root,
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
            "--absolute-git-dir",
            "--show-object-format",
            "--verify",
            "-q",
            f"{base_ref}^{{commit}}",
        ],
        check=False,
    )
    lines = result.stdout.splitlines()
    if len(lines) < 4:
        raise GitError(
            f"workspace root {workspace_root!r} is not inside a git repository "
            f"(git rev-parse: {result.stderr.strip() or 'no output'}); the git-worktree "
            "provider needs one",
            command=list(result.args),
            returncode=result.returncode,
            stderr=result.stderr,
        )
    info = RepoInfo(repo_root=lines[0], common_dir=lines[1], object_format=lines[3])
    _REPOS[workspace_root] = (info, lines[2])
    if result.returncode != 0 or len(lines) < 5:
        raise OptionError(
            "baseRef",
            f'Option "baseRef" must name a commit in {info.repo_root}, not {base_ref!r} '
            "(git rev-parse found no such commit).",
        )
    return info, lines[4]


def check_target(repo_root: str, commit: str, target: str, base_ref: str) -> None:
    """Refuse a ``targetPath`` that is not a directory at ``commit`` (reference wording)."""
    result = run_git(["-C", repo_root, "cat-file", "-t", f"{commit}:{target}"], check=False)
    if result.returncode != 0 or result.stdout.strip() != "tree":
        raise OptionError(
            "targetPath",
            f'Configured worktree target path "{target}" is not a directory in ref "{base_ref}".',
        )


def cone_patterns(target: str) -> str:
    """What ``git sparse-checkout set --cone <target>`` writes (root files are included)."""
    lines = ["/*", "!/*/"]
    parts = target.split("/")
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        lines += [f"/{prefix}/", f"!/{prefix}/*/"]
    lines.append(f"/{target}/")
    return "\n".join(lines) + "\n"


def git_dir_of(path: str) -> str:
    """The git directory of a checkout: ``<path>/.git`` or the target of its gitfile."""
    dot_git = os.path.join(path, ".git")
    if os.path.isdir(dot_git) and not os.path.islink(dot_git):
        return dot_git
    with open(dot_git, encoding="utf-8", errors="surrogateescape") as handle:
        content = handle.read(4096).strip()
    if not content.startswith("gitdir:"):
        raise GitError(
            f"{dot_git} is not a gitfile", command=["git"], returncode=None, stderr=content
        )
    return os.path.normpath(os.path.join(path, content[len("gitdir:") :].strip()))


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


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # surrogateescape: a non-UTF-8 path (os.fsdecode'd) is written as the bytes it names.
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)


def create_worktree(
    info: RepoInfo, commit: str, path: str, target: str | None, on_start: OnStart = None
) -> str:
    """``git worktree add --detach path commit`` (``path`` an empty dir we made); its git dir.

    Retried on transient lock errors; before a retry whatever the failed attempt left in
    ``path`` and its registration is removed again, so the retry starts from an empty dir.
    """
    args = ["-C", info.repo_root, "worktree", "add", "--detach", "-q"]
    if target:
        args.append("--no-checkout")
    args += [path, commit]
    for attempt in range(6):
        result = run_git(args, check=False, on_start=on_start)
        if result.returncode == 0:
            break
        if attempt == 5 or not is_transient(result.stderr):
            shown = " ".join(["git", *args])
            raise GitError(
                f"git command failed ({result.returncode}): {shown}: {summarize(result.stderr)}",
                command=list(result.args),
                returncode=result.returncode,
                stderr=result.stderr,
            )
        remove_registrations(info.common_dir, token=os.path.basename(path))
        empty_directory(path)
    git_dir = git_dir_of(path)
    if target:
        _write(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
        # Same command `worktree add` runs itself without --no-checkout, now sparse.
        run_git(["-C", path, *SPARSE_FLAGS, "reset", "--hard", "-q"], on_start=on_start)
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
    for item in _split(listing.stdout):
        meta, _, name = item.partition("\t")
        size = meta.split()[-1]
        if size.isdigit():
            sizes[name] = int(size)
    if target:
        names, _dirs = _in_cone(set(sizes), set(), target)
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
    _write(
        os.path.join(objects, "info", "alternates"), os.path.join(info.common_dir, "objects") + "\n"
    )
    for sub in ("heads", "tags"):
        os.makedirs(os.path.join(git_dir, "refs", sub), exist_ok=True)
    _write(os.path.join(git_dir, "config"), clone_config(info, sparse=bool(target)))
    shallow = os.path.join(info.common_dir, "shallow")
    if os.path.isfile(shallow):  # a shallow user repo: its grafts are needed to walk history
        shutil.copyfile(shallow, os.path.join(git_dir, "shallow"))
    if target:
        _write(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
    if commit is not None:
        _write(os.path.join(git_dir, "HEAD"), commit + "\n")
    _trim_reflog(git_dir, commit)


def reset_worktree_metadata(git_dir: str, commit: str, target: str | None) -> None:
    """Make a linked worktree's private git dir hold what a fresh ``worktree add`` leaves.

    Fresh: HEAD, ORIG_HEAD, commondir, gitdir, index, logs/HEAD (plus info/sparse-checkout
    when sparse). A test can add rebase/merge/bisect state, per-worktree refs, a
    config.worktree...: all dropped. The reflog is cut to one line.
    """
    keep = {"HEAD", "ORIG_HEAD", "commondir", "gitdir", "index", "logs", "info"}
    for name in os.listdir(git_dir):
        if name not in keep or (name == "info" and not target):
            remove_tree(os.path.join(git_dir, name))
    if target:
        info_dir = os.path.join(git_dir, "info")
        for name in os.listdir(info_dir) if os.path.isdir(info_dir) else ():
            if name != "sparse-checkout":
                remove_tree(os.path.join(info_dir, name))
        _write(os.path.join(info_dir, "sparse-checkout"), cone_patterns(target))
    _write(os.path.join(git_dir, "ORIG_HEAD"), commit + "\n")
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


def index_identity(git_dir: str) -> list[int]:
    """Identity of the index file: git writes a new one (new mtime) whenever it changes it.

    Not the inode: a parked registration is copied across filesystems (same mtime, kept
    by ``copy2``, new inode).
    """
    try:
        info = os.stat(os.path.join(git_dir, "index"))
    except FileNotFoundError:
        return []
    return [info.st_mtime_ns, info.st_size]


def restore(
    *,
    info: RepoInfo,
    isolation: str,
    path: str,
    git_dir: str,
    commit: str,
    target: str | None,
    index_id: list[int] | None,
    force_checkout: bool,
    check_file_modes: bool = True,
    since: str | None = None,
    tree_cache: str | None = None,
    on_start: OnStart = None,
) -> None:
    """Bring a used checkout back to exactly ``commit``'s tree, as a fresh one would be.

    1. Ask git (in parallel) which tracked files differ from the index by stat (content,
       a replacement by a symlink...) and which paths are untracked or ignored, and ask
       find(1) which files and directories have a mode a checkout would not give them.
    2. Delete the untracked/ignored paths, the stat-dirty tracked files and files with odd
       modes ourselves (read-only ones included; symlinks are removed, never followed),
       and give directories the mode a checkout creates them with.
    3. If anything was deleted, HEAD moved or the index was rewritten, ``git checkout -f
       --detach commit`` rewrites the missing files and detaches HEAD (never moving a
       branch a test may have checked out); otherwise the tree is already exact and no
       checkout runs, which is what makes reuse cheap.
    4. Reset the checkout's own git metadata (see the ``reset_*_metadata`` functions).

    With ``since`` (a stamp file whose mtime is before the lease began, see
    :func:`make_stamp`), steps 1-2 are replaced by :func:`_sweep_since`, which needs no git
    at all when the test changed nothing tracked.
    """
    flags = list(SPARSE_FLAGS) if target else []
    rewrite: list[str] = []
    if since is not None and tree_cache is not None and not force_checkout:
        changed, rewrite = _sweep_since(path, commit, since, tree_cache, target)
    else:
        changed = _sweep_with_git(path, check_file_modes)
    if isolation == CLONE:
        # The config decides sparse or not for a clone: put ours back before checking out.
        _write(os.path.join(git_dir, "config"), clone_config(info, sparse=bool(target)))
        if target:
            _write(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
    elif target:
        _write(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
    head = _read(os.path.join(git_dir, "HEAD")).strip()
    if changed or force_checkout or head != commit or index_identity(git_dir) != index_id:
        run_git(["-C", path, *flags, "checkout", "-q", "-f", "--detach", commit], on_start=on_start)
    elif rewrite:
        # Only some tracked files changed, index and HEAD did not: write just those from
        # the index (-u refreshes their stat data) instead of checking out the whole tree.
        run_git(
            ["-C", path, *flags, "checkout-index", "-u", "-f", "-q", "--", *rewrite],
            on_start=on_start,
        )
    if isolation == CLONE:
        reset_clone_metadata(info, git_dir, commit=commit, target=target)
    else:
        reset_worktree_metadata(git_dir, commit, target)


def make_stamp(stamp: str) -> None:
    """Create ``stamp`` with an mtime just before the start of the current second.

    Every change to a file sets its ctime (content, mode, links, rename -- and userspace
    cannot set ctime), and adding/removing/renaming an entry sets its directory's mtime.
    File times come from the coarse realtime clock and some filesystems keep whole seconds
    only: there a stamp one nanosecond before the current second is older than any change
    made from now on (at the price of also catching what changed earlier in this second:
    more work, never a miss); where the filesystem keeps sub-second times, one nanosecond
    before its own current reading is.
    """
    clock = getattr(time, "CLOCK_REALTIME_COARSE", 5)
    second = time.clock_gettime_ns(clock) // 1_000_000_000
    with open(stamp, "w", encoding="utf-8"):
        pass
    os.utime(stamp)  # UTIME_NOW: the filesystem's own reading of its clock
    now = os.stat(stamp).st_mtime_ns
    # Sub-second timestamps (tmpfs, ext4 with large inodes): every later change gets a
    # ctime >= this reading, so one nanosecond before it is tight. Going back to the whole
    # second would also catch what the previous restore rewrote in this second, and a suite
    # of quick modules would rewrite every file at every hand-out.
    when = now - 1 if now % 1_000_000_000 else second * 1_000_000_000 - 1
    os.utime(stamp, ns=(when, when))


def _tracked_tree(path: str, commit: str, cache: str) -> tuple[set[str], set[str]]:
    """(tracked files, tracked directories) of ``commit``, cached in ``cache`` per commit."""
    raw = _read_bytes(cache)
    if not raw.startswith(commit.encode() + b"\0"):
        listing = run_git(["-C", path, "ls-tree", "-r", "-t", "-z", commit]).stdout
        raw = commit.encode() + b"\0" + listing.encode("utf-8", "surrogateescape")
        with open(cache, "wb") as handle:
            handle.write(raw)
    files: set[str] = set()
    dirs: set[str] = set()
    for item in raw.decode("utf-8", "surrogateescape").split("\0")[1:]:
        if not item:
            continue
        meta, _, name = item.partition("\t")
        (dirs if meta.split(" ")[1] == "tree" else files).add(name)
    return files, dirs


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def _in_cone(files: set[str], dirs: set[str], target: str) -> tuple[set[str], set[str]]:
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


def _sweep_since(
    path: str, commit: str, stamp: str, cache: str, target: str | None = None
) -> tuple[bool, list[str]]:
    """Undo every change made after ``stamp``; whether tracked content must be checked out.

    find(1) (split across CPUs) lists files whose ctime and directories whose mtime is
    newer than the stamp (plus directories with an odd mode). New entries are deleted; a
    changed tracked file is deleted too and a directory that lost tracked entries noted,
    and both make the caller restore tracked content: ``(True, [])`` asks for a full
    ``git checkout``, ``(False, files)`` for just those files. A test that only added
    files (``__pycache__``, outputs) costs the finds and no git process.
    """
    tests = f"-type d ( -newer {{0}} -o ! -perm {DIR_MODE:o} ) -print0 -o"
    tests += " ! -type d -cnewer {0} -print0"
    predicate = [part.format(stamp) for part in tests.split()]
    # find is bound by one stat per file (30 ms for 10,000 on tmpfs here): split the tree
    # between one find per CPU (up to 4). The directories split open here are checked
    # the same way in Python.
    since_ns = os.stat(stamp).st_mtime_ns
    found_paths: list[str] = []
    starts: list[str] = []
    frontier = [path]
    workers = max(2, min(4, os.cpu_count() or 2))
    while frontier and len(starts) + len(frontier) < 8 * workers:
        current = frontier.pop(0)
        st = os.lstat(current)
        if st.st_mtime_ns > since_ns or stat.S_IMODE(st.st_mode) != DIR_MODE:
            found_paths.append(current)
        if stat.S_IMODE(st.st_mode) & 0o500 != 0o500:
            starts.append(current)  # let find report what it can; the git sweep follows
            continue
        with os.scandir(current) as entries:
            for entry in entries:
                if current == path and entry.name == ".git":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    frontier.append(entry.path)
                else:
                    starts.append(entry.path)
    starts += frontier
    groups = [starts[i::workers] for i in range(workers)]
    finders = [
        subprocess.Popen(
            ["find", *group, *predicate],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for group in groups
        if group
    ]
    for finder in finders:
        found_paths += _split(finder.communicate()[0].decode("utf-8", "surrogateescape"))
    changed = sorted(
        {os.path.relpath(p, path) for p in found_paths},
        key=lambda rel: (rel.count("/"), rel),
    )
    if not changed:
        return False, []
    files, dirs = _tracked_tree(path, commit, cache)
    if target:
        files, dirs = _in_cone(files, dirs, target)
    children: dict[str, set[str]] = {}
    for name in files | dirs:
        parent, _, leaf = name.rpartition("/")
        children.setdefault(parent or ".", set()).add(leaf)
    need_checkout = False
    rewrite: list[str] = []
    removed: list[str] = []
    for rel in changed:
        if rel != "." and any(rel.startswith(r + "/") for r in removed):
            continue
        full = os.path.join(path, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and (rel == "." or rel in dirs):
            if stat.S_IMODE(st.st_mode) != DIR_MODE:
                os.chmod(full, DIR_MODE)
                if stat.S_IMODE(st.st_mode) & 0o500 != 0o500:
                    # find could not look inside: let git find what changed in there.
                    need_checkout |= _sweep_with_git(path, True)
            prefix = "" if rel == "." else rel + "/"
            present = set(os.listdir(full))
            tracked = children.get(rel, set())
            for name in tracked - present:
                # a tracked entry was deleted or renamed away
                if prefix + name in files:
                    rewrite.append(prefix + name)
                else:
                    need_checkout = True  # a whole tracked directory
            for name in sorted(present - tracked - ({".git"} if rel == "." else set())):
                # An entry renamed or copied in keeps its old times, so find did not list
                # it; its directory's new mtime did. Not tracked here: it goes.
                remove_inside(path, prefix + name)
                removed.append(prefix + name)
            continue
        remove_inside(path, rel)
        removed.append(rel)
        if rel in files:
            rewrite.append(rel)
        elif rel in dirs:
            need_checkout = True
    return need_checkout, rewrite


def _sweep_with_git(path: str, check_file_modes: bool) -> bool:
    """Steps 1-2 of :func:`restore` by asking git; whether anything was removed."""
    # git ignores permission bits other than +x, and its ctime check compares whole
    # seconds: a chmod in the same second as git recorded a file's stat is invisible to
    # diff-files. find(1) lists every file and directory whose mode is not what a checkout
    # creates (it runs while git does its part). The caller may skip files when the lease
    # began in a later second than git last wrote files (then diff-files sees any chmod).
    file_modes = [f"{FILE_MODE:o}", f"{FILE_MODE | (DIR_MODE & 0o111):o}"]
    odd = "( -type f ! -perm {0} ! -perm {1} ) -print0 -o -type d ! -perm {2} -print0"
    if not check_file_modes:
        # Directories only: find then stats just the directories (file types come from
        # readdir), a third of the cost on 10,000 files.
        odd = "-type d ! -perm {2} -print0"
    tests = odd.format(*file_modes, f"{DIR_MODE:o}").split()
    finder = subprocess.Popen(
        ["find", path, "-path", os.path.join(path, ".git"), "-prune", "-o", *tests],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dirty, others = run_git_parallel(
            [
                # The user's config must not blunt the stat check (trustctime=false or
                # checkStat=minimal would hide a chmod or a same-size rewrite).
                [
                    "-c",
                    "core.trustctime=true",
                    "-c",
                    "core.checkStat=default",
                    "-C",
                    path,
                    "diff-files",
                    "--name-only",
                    "-z",
                ],
                ["-C", path, "ls-files", "-o", "--directory", "-z"],
            ]
        )
    finally:
        # find exits 1 when it met an unreadable directory (a test's mode 000 dir): that
        # one is untracked or reported by its mode anyway.
        odd_modes = finder.communicate()[0].decode("utf-8", "surrogateescape")
    changed = False
    for rel in _split(others.stdout):
        changed = True
        remove_inside(path, rel.rstrip("/"))
    for rel in _split(dirty.stdout):
        changed = True
        remove_inside(path, rel)
    for full in _split(odd_modes):
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # removed above
        if stat.S_ISDIR(st.st_mode):
            os.chmod(full, DIR_MODE)
        else:
            changed = True
            remove_inside(path, os.path.relpath(full, path))
    return changed


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read(4096)
    except FileNotFoundError:
        return ""


def _split(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]


# --- deleting ------------------------------------------------------------------------


def _on_error(function: Callable[..., Any], path: str, excinfo: Any) -> None:
    """``rmtree`` error handler: a test made a file or directory read-only; undo, retry.

    ``excinfo`` is the exception (3.12+ ``onexc``) or an ``exc_info`` tuple (``onerror``).
    """
    error = excinfo[1] if isinstance(excinfo, tuple) else excinfo
    if isinstance(error, FileNotFoundError):
        return  # raced with another deleter, or already gone: the goal is reached
    for target in (os.path.dirname(path), path):
        with contextlib.suppress(OSError):
            st = os.lstat(target)
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.chmod(target, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise error  # not ours to open even after chmod: report, never loop
        # Could not list it (mode 0o000) or rmdir found it not empty: now accessible.
        _rmtree(path)
    else:
        os.unlink(path)


def _rmtree(path: str) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_on_error)
    else:
        shutil.rmtree(path, onerror=_on_error)


def remove_tree(path: str, *, fast: bool = False) -> None:
    """Delete ``path`` (a file, symlink or directory tree) without following symlinks.

    ``shutil.rmtree`` walks with ``O_NOFOLLOW`` directory fds and unlinks symlinks rather
    than descending into them; read-only files and directories a test left are made
    writable and retried. A missing path is fine. ``fast``: a whole checkout; try
    ``rm -rf`` first (C, about 10x faster than rmtree on 1,000 files; it never follows
    symlinks either), and finish with rmtree whatever it could not delete.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if fast and stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            subprocess.run(
                ["rm", "-rf", "--one-file-system", "--", path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        if not os.path.lexists(path):
            return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except PermissionError as error:  # read-only parent directory
            _on_error(os.unlink, path, error)
        return
    _rmtree(path)


def empty_directory(path: str) -> None:
    """Delete everything inside ``path`` (a directory we created), keeping ``path``."""
    with os.scandir(path) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        remove_tree(os.path.join(path, name))


def remove_inside(root: str, rel: str) -> None:
    """Delete ``root/rel`` if, and only if, every directory on the way is a real directory.

    A test may replace a tracked directory by a symlink to somewhere else; git then lists
    ``dir/file`` as changed, and unlinking ``root/dir/file`` would follow the symlink out of
    our tree. Walk the components with lstat and delete the first one that is not a real
    directory instead (it is inside ``root``; git restores it).
    """
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return
    current = root
    for depth, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        last = depth == len(parts) - 1
        if last or not stat.S_ISDIR(st.st_mode):
            remove_tree(current)
            return


def list_registrations(common_dir: str) -> Iterable[tuple[str, str]]:
    """``(registration dir, gitdir it records or "")`` for each linked worktree."""
    base = os.path.join(common_dir, "worktrees")
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        reg = os.path.join(base, name)
        found.append((reg, _read(os.path.join(reg, "gitdir")).strip()))
    return found


def remove_registrations(
    common_dir: str,
    *,
    token: str,
    paths: Iterable[str] = (),
    known: str | None = None,
    root: str | None = None,
) -> None:
    """Delete only *our* ``.git/worktrees/<reg>`` entries -- never a repository-wide prune.

    Ours: the registration git named after our token directory (git names it after the
    basename of the path given to ``worktree add``, adding a number if taken), and, with
    ``root``, only if its ``gitdir`` (or the parked one of a pooled checkout) points back
    under ``root`` or was never written. This clears a registration a SIGKILLed ``worktree
    add`` left locked as "initializing" -- which ``git worktree prune`` skips and ``git
    worktree remove --force`` (single -f) refuses -- and one killed before it even wrote
    ``gitdir``; a registration of the user's own (another name, or pointing elsewhere) is
    never touched, whatever a record says.

    ``known``: the registration dir the owner recorded after a completed ``worktree add``;
    then only it is removed (if it is ours by the rules above), without reading every
    registration of the repository.
    """
    targets = {os.path.realpath(os.path.join(p, ".git")) for p in paths}
    base = os.path.join(common_dir, "worktrees")
    real_root = os.path.realpath(root) if root is not None else None

    def named_ours(reg: str) -> bool:
        name = os.path.basename(reg)
        in_base = os.path.normpath(os.path.dirname(reg)) == os.path.normpath(base)
        return in_base and (
            name == token or (name.startswith(token) and name[len(token) :].isdigit())
        )

    def points_ours(reg: str) -> bool:
        for leaf in ("gitdir", PARKED_GITDIR):
            gitdir = _read(os.path.join(reg, leaf)).strip()
            if not gitdir:
                continue
            real = os.path.realpath(gitdir)
            if real in targets:
                continue
            if os.path.exists(gitdir):
                # The user moved the checkout (`git worktree move` of a kept worktree): the
                # registration now serves a worktree outside what we created. Not ours.
                return False
            if real_root is not None and not real.startswith(real_root + os.sep):
                return False  # names a place this root never held
        return True

    if known is not None and os.path.basename(known) == token:
        if named_ours(known) and points_ours(known):
            remove_tree(known)
        return
    for reg, _gitdir in list_registrations(common_dir):
        if named_ours(reg) and points_ours(reg):
            remove_tree(reg)


PARKED_GITDIR = "aiops-pooled-gitdir"


def park_registration(git_dir: str, reason: str) -> None:
    """Hide a pooled worktree's registration from ``git worktree list``, keep it intact.

    git lists a registration only if its ``gitdir`` file can be read, so renaming that file
    hides it; the ``locked`` file keeps ``git worktree prune`` (and the one ``git gc`` runs)
    from deleting the now gitdir-less registration. Both are renames/writes inside the
    registration dir: no copy of the index, whatever the repository's size.
    """
    _write(os.path.join(git_dir, "locked"), reason + "\n")
    os.rename(os.path.join(git_dir, "gitdir"), os.path.join(git_dir, PARKED_GITDIR))


def unpark_registration(git_dir: str, path: str) -> None:
    """Make a parked registration a normal one again, for the checkout now at ``path``."""
    point_registration(git_dir, path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(git_dir, PARKED_GITDIR))
    os.unlink(os.path.join(git_dir, "locked"))


def point_registration(git_dir: str, path: str) -> None:
    """After renaming a linked worktree's directory, tell its registration (``git worktree
    move`` does exactly this rename plus this one-line write, with an extra process)."""
    _write(os.path.join(git_dir, "gitdir"), os.path.join(path, ".git") + "\n")
