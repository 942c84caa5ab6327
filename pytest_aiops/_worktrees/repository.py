"""The user's repository: where it is, which commit a ref names, and our registrations in it.

Everything here reads or edits what lives in the *user's* repository (its work tree root,
common dir, refs, and the ``<common-dir>/worktrees/<reg>`` registrations of linked
worktrees), as opposed to what lives in a checkout of ours (:mod:`.create`, :mod:`.restore`):
a mistake here touches the user's data, so each edit states why the thing it touches is ours.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from .._errors import GitError, InvalidArgumentError, OptionError
from .files import read_bytes, read_text, remove_tree, write_text
from .git import dubious_ownership, run_git
from .locate import LOCATE, RepoInfo

#: What a pooled worktree's registration keeps its ``gitdir`` file as (see
#: :func:`park_registration`).
PARKED_GITDIR = "aiops-pooled-gitdir"


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
    head = read_text(os.path.join(git_dir, "HEAD")).strip()
    if head.startswith("ref: refs/heads/"):
        name = head[len("ref: ") :]
        value = read_text(os.path.join(common_dir, name)).strip()
        if not value:
            for line in read_bytes(os.path.join(common_dir, "packed-refs")).splitlines():
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
        # Not git's failure: the caller named no directory (no git was run).
        raise InvalidArgumentError(
            f"workspace root {workspace_root!r} is not a directory; the git-worktree provider "
            "needs a workspace inside a git repository"
        )
    result = run_git(
        [
            "-C",
            workspace_root,
            *LOCATE,
            "--verify",
            "-q",
            f"{base_ref}^{{commit}}",
        ],
        check=False,
    )
    lines = result.stdout.splitlines()
    dubious = dubious_ownership(result.stderr)
    if dubious is not None:
        raise GitError(
            dubious, command=list(result.args), returncode=result.returncode, stderr=result.stderr
        )
    if len(lines) < 4:
        raise GitError(
            f"workspace root {workspace_root!r} is not inside a git repository "
            f"(git rev-parse: {result.stderr.strip() or 'no output'}); the git-worktree "
            "provider needs one",
            command=list(result.args),
            returncode=result.returncode,
            stderr=result.stderr,
        )
    info = RepoInfo(
        repo_root=lines[0], common_dir=lines[1], object_format=lines[3], git_dir=lines[2]
    )
    _REPOS[workspace_root] = (info, lines[2])
    if result.returncode != 0 or len(lines) < 5:
        unborn = _unborn_head(info) if base_ref == "HEAD" else None
        if unborn is not None:
            raise OptionError("baseRef", unborn)
        raise OptionError(
            "baseRef",
            f'Option "baseRef" must name a commit in {info.repo_root}, not {base_ref!r} '
            "(git rev-parse found no such commit).",
        )
    return info, lines[4]


def _unborn_head(info: RepoInfo) -> str | None:
    """Why ``HEAD`` names no commit, if it is a branch not born yet (asked only after
    ``rev-parse HEAD`` failed): a new repository, or an orphan branch just made."""
    branch = run_git(["-C", info.repo_root, "symbolic-ref", "-q", "--short", "HEAD"], check=False)
    if branch.returncode != 0:
        return None
    name = branch.stdout.strip()
    anything = run_git(
        ["-C", info.repo_root, "for-each-ref", "--count=1", "--format=%(objectname)"],
        check=False,
    )
    if not anything.stdout.strip():
        return (
            f"the repository {info.repo_root} has no commits yet (HEAD is the unborn branch "
            f"{name!r}); commit once, or pass baseRef naming a commit"
        )
    return (
        f"HEAD of {info.repo_root} is the branch {name!r}, which has no commits yet; "
        "commit once, or pass baseRef naming a commit"
    )


def check_target(repo_root: str, commit: str, target: str, base_ref: str) -> None:
    """Refuse a ``targetPath`` that is not a directory at ``commit`` (reference wording)."""
    result = run_git(["-C", repo_root, "cat-file", "-t", f"{commit}:{target}"], check=False)
    if result.returncode != 0 or result.stdout.strip() != "tree":
        raise OptionError(
            "targetPath",
            f'Configured worktree target path "{target}" is not a directory in ref "{base_ref}".',
        )


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


def _registrations(common_dir: str) -> list[str]:
    """The registration dir of each linked worktree of the repository."""
    base = os.path.join(common_dir, "worktrees")
    try:
        return [os.path.join(base, name) for name in os.listdir(base)]
    except (FileNotFoundError, NotADirectoryError):
        return []


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
            gitdir = read_text(os.path.join(reg, leaf)).strip()
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
    for reg in _registrations(common_dir):
        if named_ours(reg) and points_ours(reg):
            remove_tree(reg)


def park_registration(git_dir: str, reason: str) -> None:
    """Hide a pooled worktree's registration from ``git worktree list``, keep it intact.

    git lists a registration only if its ``gitdir`` file can be read, so renaming that file
    hides it; the ``locked`` file keeps ``git worktree prune`` (and the one ``git gc`` runs)
    from deleting the now gitdir-less registration. Both are renames/writes inside the
    registration dir: no copy of the index, whatever the repository's size.
    """
    write_text(os.path.join(git_dir, "locked"), reason + "\n")
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
    write_text(os.path.join(git_dir, "gitdir"), os.path.join(path, ".git") + "\n")
