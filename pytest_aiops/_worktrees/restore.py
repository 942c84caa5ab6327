"""Bringing a used checkout back to exactly a commit's tree, as a fresh one would be.

This is what makes the pool worth having: a restore that finds nothing changed runs no
git at all, one that finds a few changed files rewrites just those. How the lease's changes
are found is a :class:`Sweep`, chosen by the store from what its record knows about the
lease (:class:`RestorePlan`); this module does not read records.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
import subprocess
import time
from dataclasses import dataclass

from .._errors import InvalidArgumentError
from .create import (
    FULL_PATTERNS,
    SPARSE_FLAGS,
    UNSPARSE_FLAGS,
    OnStart,
    clone_config,
    cone_patterns,
    in_cone,
    reset_clone_metadata,
    reset_worktree_config,
    reset_worktree_metadata,
)
from .defaults import CLONE
from .files import read_bytes, read_text, remove_inside, write_text
from .git import run_git, run_git_parallel, split_nul
from .locate import RepoInfo

# Read once: the mode a fresh checkout gives a directory it creates (0o777 & ~umask).
# os.umask can only be read by setting it; do it at import, before any thread exists.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


class Sweep(enum.Enum):
    """How a restore finds (and deletes) what a lease changed in the work tree."""

    #: find(1) lists what changed after the stamp made when the lease began
    #: (:func:`make_stamp`); no git at all when the test only added files.
    SINCE_STAMP = "since-stamp"
    #: git diff-files and ls-files, and find(1) for files and directories with odd modes.
    GIT = "git"
    #: The same, but find(1) checks directory modes only: used when the lease began in a
    #: later second than git last wrote files, so git's stat check sees any chmod.
    GIT_DIRECTORIES = "git-directories"


@dataclass(frozen=True)
class CheckoutDir:
    """Where a checkout is and what kind it is."""

    info: RepoInfo
    isolation: str
    path: str
    git_dir: str


@dataclass(frozen=True)
class RestorePlan:
    """What to restore a checkout to, and how to find what its lease changed.

    ``checkout``: run ``git checkout`` whatever the sweep finds (switching commits, or
    settling an index git still considers racily clean). ``index_id``: the index's
    :func:`index_identity` after git last wrote it; any other one means the index changed.
    ``stamp`` and ``tree_cache`` are required by :attr:`Sweep.SINCE_STAMP` only.
    """

    commit: str
    target: str | None
    sweep: Sweep
    checkout: bool = False
    index_id: tuple[int, ...] | None = None
    stamp: str | None = None
    tree_cache: str | None = None

    def __post_init__(self) -> None:
        if self.sweep is Sweep.SINCE_STAMP and (self.stamp is None or self.tree_cache is None):
            raise InvalidArgumentError("a since-stamp restore needs a stamp and a tree cache")


def index_identity(git_dir: str) -> tuple[int, ...]:
    """Identity of the index file: git writes a new one (new mtime) whenever it changes it.

    Not the inode: a parked registration is copied across filesystems (same mtime, kept
    by ``copy2``, new inode).
    """
    try:
        info = os.stat(os.path.join(git_dir, "index"))
    except FileNotFoundError:
        return ()
    return (info.st_mtime_ns, info.st_size)


def restore(checkout: CheckoutDir, plan: RestorePlan, *, on_start: OnStart = None) -> None:
    """Bring a used checkout back to exactly ``plan.commit``'s tree, as a fresh one would be.

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
    4. Reset the checkout's own git metadata (see the ``reset_*_metadata`` functions; the
       per-worktree config and sparse patterns before step 3, as they decide what it writes).

    Submodules a test initialised are emptied first (git does not look inside them), and
    a checkout the test made sparse is checked out whole again: fresh equals reused.

    With :attr:`Sweep.SINCE_STAMP`, steps 1-2 are replaced by :func:`_sweep_since`, which
    needs no git at all when the test changed nothing tracked.
    """
    info, path, git_dir = checkout.info, checkout.path, checkout.git_dir
    commit, target = plan.commit, plan.target
    flags = list(SPARSE_FLAGS) if target else []
    head = read_text(os.path.join(git_dir, "HEAD")).strip()
    # Submodules a test initialised: a fresh checkout has each as an empty directory; git
    # neither lists nor cleans what is inside one (and the git dir's modules/ goes below).
    links = _gitlinks(path, commit, plan.tree_cache)
    if head != commit and len(head) in (40, 64) and set(head) <= _HEX:
        links |= _gitlinks(path, head, None)  # what the checkout holds before switching
    if target:
        links = in_cone(links, set(), target)[0]  # outside the cone there is no directory
    relink = _clear_gitlinks(path, sorted(links))
    rewrite: list[str] = []
    if plan.sweep is Sweep.SINCE_STAMP and plan.stamp is not None and plan.tree_cache:
        changed, rewrite = _sweep_since(path, commit, plan.stamp, plan.tree_cache, target)
    else:
        changed = _sweep_with_git(path, check_file_modes=plan.sweep is not Sweep.GIT_DIRECTORIES)
    # The checkout's own config before anything is checked out: it decides how files are
    # written (a per-worktree core.autocrlf) and whether the checkout is sparse.
    was_sparse = False
    if checkout.isolation == CLONE:
        write_text(os.path.join(git_dir, "config"), clone_config(info, sparse=bool(target)))
        if target:
            write_text(os.path.join(git_dir, "info", "sparse-checkout"), cone_patterns(target))
        else:
            was_sparse = os.path.lexists(os.path.join(git_dir, "info", "sparse-checkout"))
    else:
        was_sparse = reset_worktree_config(info, git_dir, target)
    index_changed = index_identity(git_dir) != plan.index_id
    if changed or relink or plan.checkout or head != commit or index_changed or was_sparse:
        unsparse = not target and (index_changed or was_sparse)
        if unsparse:
            # The test may have made the checkout sparse (skip-worktree bits in the index,
            # which a plain checkout keeps): check out with every path in the patterns.
            write_text(os.path.join(git_dir, "info", "sparse-checkout"), FULL_PATTERNS)
            flags = list(UNSPARSE_FLAGS)
        run_git(["-C", path, *flags, "checkout", "-q", "-f", "--detach", commit], on_start=on_start)
    elif rewrite:
        # Only some tracked files changed, index and HEAD did not: write just those from
        # the index (-u refreshes their stat data) instead of checking out the whole tree.
        run_git(
            ["-C", path, *flags, "checkout-index", "-u", "-f", "-q", "--", *rewrite],
            on_start=on_start,
        )
    if checkout.isolation == CLONE:
        reset_clone_metadata(info, git_dir, commit=commit, target=target)
    else:
        reset_worktree_metadata(info, git_dir, commit, target)


_HEX = frozenset("0123456789abcdef")


def _gitlinks(path: str, commit: str, cache: str | None) -> set[str]:
    """The submodules (gitlinks) of ``commit``'s tree, from the tree cache's header.

    Without a cache (or a stale one) git is asked. The header is read alone (the first
    block of the file): a restore that finds nothing changed reads no listing.
    """
    if cache is None:
        listing = run_git(["-C", path, "ls-tree", "-r", "-t", "-z", commit]).stdout
        return _gitlinks_in(listing)
    key = _cache_key(commit)
    with contextlib.suppress(FileNotFoundError), open(cache, "rb") as handle:
        head = handle.read(4096)
        items = head[len(key) :].split(b"\0")
        if head.startswith(key) and items[0].isdigit():
            count = int(items[0])
            if count == 0:
                return set()
            if len(items) > count + 1:  # every name and the \0 after it is in the block
                return {os.fsdecode(item) for item in items[1 : count + 1]}
    listed = _read_tree_cache(path, commit, cache)
    return set(listed[1 : int(listed[0]) + 1])


def _gitlinks_in(listing: str) -> set[str]:
    """The gitlink paths of ``ls-tree -r -t -z`` output (mode 160000)."""
    return {item.partition("\t")[2] for item in split_nul(listing) if item.startswith("160000 ")}


def _clear_gitlinks(path: str, links: list[str]) -> bool:
    """Empty each submodule's directory, as a fresh checkout has it; whether one was
    missing or not a directory (then a checkout must make it again)."""
    missing = False
    for rel in links:
        full = os.path.join(path, rel)
        if not _parents_are_directories(path, rel):
            # A test replaced a parent by a symlink (maybe to a directory outside) or a
            # file: nothing is done through it; the sweep removes it, the checkout remakes.
            missing = True
            continue
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            missing = True
            continue
        except NotADirectoryError:
            continue  # a parent was replaced by a file: the sweep deals with that
        if not stat.S_ISDIR(st.st_mode):
            missing = True
            remove_inside(path, rel)
            continue
        if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
            os.chmod(full, DIR_MODE)
        for name in os.listdir(full):
            remove_inside(path, f"{rel}/{name}")
    return missing


def _parents_are_directories(path: str, rel: str) -> bool:
    """Whether every parent of ``rel`` under ``path`` is a real directory (no symlink)."""
    current = path
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


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


def _cache_key(commit: str) -> bytes:
    """What a tree cache of ``commit`` starts with (``+gitlinks``: the format with them)."""
    return commit.encode() + b"+gitlinks\0"


def _read_tree_cache(path: str, commit: str, cache: str) -> list[str]:
    """The tree cache of ``commit`` after its key, made anew if it is another commit's.

    The file: key, the number of gitlinks, each gitlink, then ``git ls-tree -r -t -z``'s
    items, all NUL-separated.
    """
    key = _cache_key(commit)
    raw = read_bytes(cache)
    if not raw.startswith(key) or not raw[len(key) :].partition(b"\0")[0].isdigit():
        listing = run_git(["-C", path, "ls-tree", "-r", "-t", "-z", commit]).stdout
        links = sorted(_gitlinks_in(listing))
        body = "\0".join([str(len(links)), *links, listing])
        raw = key + body.encode("utf-8", "surrogateescape")
        with open(cache, "wb") as handle:
            handle.write(raw)
    return raw[len(key) :].decode("utf-8", "surrogateescape").split("\0")


def _tracked_tree(path: str, commit: str, cache: str) -> tuple[set[str], set[str]]:
    """(tracked files, tracked directories) of ``commit``, cached in ``cache`` per commit.

    A submodule (gitlink) counts as a file: its directory is never entered.
    """
    items = _read_tree_cache(path, commit, cache)
    files: set[str] = set()
    dirs: set[str] = set()
    for item in items[int(items[0]) + 1 :]:
        if not item:
            continue
        meta, _, name = item.partition("\t")
        (dirs if meta.split(" ")[1] == "tree" else files).add(name)
    return files, dirs


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
        found_paths += split_nul(finder.communicate()[0].decode("utf-8", "surrogateescape"))
    changed = sorted(
        {os.path.relpath(p, path) for p in found_paths},
        key=lambda rel: (rel.count("/"), rel),
    )
    if not changed:
        return False, []
    files, dirs = _tracked_tree(path, commit, cache)
    if target:
        files, dirs = in_cone(files, dirs, target)
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
    # A nested repository's .git (`git init` or a clone inside a tracked directory) is
    # listed too: git never reports one as untracked.
    nested = ["-name", ".git", "-prune", "-print0", "-o"]
    finder = subprocess.Popen(
        ["find", path, "-path", os.path.join(path, ".git"), "-prune", "-o", *nested, *tests],
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
    for rel in split_nul(others.stdout):
        changed = True
        remove_inside(path, rel.rstrip("/"))
    for rel in split_nul(dirty.stdout):
        changed = True
        remove_inside(path, rel)
    for full in split_nul(odd_modes):
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # removed above
        if os.path.basename(full) == ".git":
            changed = True
            remove_inside(path, os.path.relpath(full, path))
        elif stat.S_ISDIR(st.st_mode):
            os.chmod(full, DIR_MODE)
        else:
            changed = True
            remove_inside(path, os.path.relpath(full, path))
    return changed
