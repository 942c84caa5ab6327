"""The ``git-worktree`` provider: an isolated checkout of the repository under test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import OptionError
from .._git import git_output, run_git
from .._hashing import build_scoped_name
from .._options import normalize_target_path, read_optional_string, read_string, resolve_path
from .._types import ResourceContextPatch, ResourceLease

KIND = "git-worktree"


@dataclass(frozen=True)
class GitWorktreeProviderConfig:
    """Defaults for ``git-worktree`` requests (each overridable per request by its option)."""

    root_directory: str = ".ai_ops/worktrees"
    base_ref: str = "HEAD"
    target_path: str | None = None


class GitWorktreeProvider:
    """Creates a detached worktree at ``baseRef`` per request; removes it on release."""

    kind = KIND

    def __init__(self, config: GitWorktreeProviderConfig | None = None) -> None:
        self.config = config or GitWorktreeProviderConfig()

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        root_option = read_string(options, "rootDirectory", self.config.root_directory)
        base_ref = read_string(options, "baseRef", self.config.base_ref)
        target = normalize_target_path(
            read_optional_string(options, "targetPath") or self.config.target_path
        )
        repo_root = git_output(["-C", workspace_root, "rev-parse", "--show-toplevel"])
        worktree_root = resolve_path(repo_root, root_option)
        os.makedirs(worktree_root, exist_ok=True)
        worktree_path = os.path.join(worktree_root, build_scoped_name(session_id))
        run_git(["-C", repo_root, "worktree", "add", "--detach", worktree_path, base_ref])

        def release() -> None:
            run_git(["-C", repo_root, "worktree", "remove", "--force", "--force", worktree_path])
            shutil.rmtree(worktree_path, ignore_errors=True)

        try:
            if target:
                run_git(["-C", worktree_path, "sparse-checkout", "init", "--cone"])
                run_git(["-C", worktree_path, "sparse-checkout", "set", target])
            working = os.path.join(worktree_path, target) if target else worktree_path
            if not os.path.isdir(working):
                raise OptionError(
                    "targetPath",
                    f'Configured worktree target path "{target}" is not a directory in ref '
                    f'"{base_ref}".',
                )
        except BaseException:
            release()
            raise
        hard: dict[str, Any] = {
            "repoRoot": repo_root,
            "worktreeRoot": worktree_root,
            "worktreePath": worktree_path,
            "baseRef": base_ref,
        }
        metadata: dict[str, Any] = {
            "git_worktree_path": worktree_path,
            "git_worktree_base_ref": base_ref,
        }
        sections = [f"Git worktree: {worktree_path}", f"Worktree base ref: {base_ref}"]
        if target:
            hard["targetPath"] = target
            metadata["git_worktree_target_path"] = target
            sections.append(f"Worktree target path: {target} (sparse-checkout enabled)")
        soft = ResourceContextPatch(
            env={
                "AGENT_REPO_ROOT": repo_root,
                "AGENT_WORKTREE_PATH": worktree_path,
                "AGENT_WORKTREE_BASE_REF": base_ref,
            },
            prompt_sections=sections,
            metadata=metadata,
            preferred_working_directory=working,
        )
        return ResourceLease(KIND, hard, release, soft)


def create_git_worktree_provider(
    config: GitWorktreeProviderConfig | None = None,
) -> GitWorktreeProvider:
    """A ``git-worktree`` provider with ``config`` as its defaults."""
    return GitWorktreeProvider(config)
