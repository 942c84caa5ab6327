"""A git hook's environment never reaches the user's repository through a worktree.

pytest run from a real pre-commit hook (``git commit -a`` exports ``GIT_INDEX_FILE``) and a
real pre-receive hook (the push's quarantine: ``GIT_OBJECT_DIRECTORY``,
``GIT_ALTERNATE_OBJECT_DIRECTORIES``, ``GIT_QUARANTINE_PATH``): git run by the test in its
worktree acts on the worktree alone, with or without ``env=git_worktree.env()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_aiops._worktrees.git import LOCAL_ENV_VARS, REPO_ENV, clean_env
from pytest_aiops.plugin import GitWorktree

from .git_helpers import GIT_IDENTITY, MakeRepo, git, run
from .inner_run_helpers import check_inner_warnings
from .process_helpers import child_env

pytestmark = pytest.mark.usefixtures("private_lock_dir")

#: Every inner run: no plugin that is not ours, warnings are errors.
_ADDOPTS = "-p no:asyncio -p no:aiohttp -p no:benchmark -p no:cacheprovider -W error"


def _hook_env(**extra: str) -> dict[str, str]:
    """The environment of the user's git command whose hook runs pytest."""
    env = child_env(None, PYTEST_ADDOPTS=_ADDOPTS)
    env.update(GIT_IDENTITY)
    env.update(extra)
    for key in REPO_ENV:
        env.pop(key, None)
    return env


def _hook(repo_git_dir: Path, name: str, body: str) -> None:
    hook = repo_git_dir / "hooks" / name
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)


def test_local_env_vars_are_what_git_says() -> None:
    """The list is git's own (``rev-parse --local-env-vars``), all of it in the set we drop."""
    said = subprocess.run(
        ["git", "rev-parse", "--local-env-vars"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert said
    assert set(said) <= set(LOCAL_ENV_VARS) <= set(REPO_ENV)


def test_env_strips_the_set_the_plugins_own_git_strips(tmp_path: Path) -> None:
    poisoned = {name: str(tmp_path / "elsewhere") for name in REPO_ENV}
    worktree = GitWorktree(
        path=tmp_path, base_ref="HEAD", repo_root=tmp_path, working_directory=tmp_path
    )
    env = worktree.env({**poisoned, "KEEP": "1"})
    assert env["KEEP"] == "1"
    assert not set(env) & set(REPO_ENV)
    os.environ.update(poisoned)
    try:
        assert not set(clean_env()) & set(REPO_ENV)
    finally:
        for name in poisoned:
            del os.environ[name]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_pre_commit_hooks_index_does_not_get_the_tests_git_add(
    make_repo: MakeRepo, xdist: list[str]
) -> None:
    repo = make_repo(
        {
            "a.txt": "a\n",
            ".gitignore": "__pycache__/\n",
            "pytest.ini": "[pytest]\nfilterwarnings = error\n",
            "test_gen.py": (
                "import os, subprocess, pytest\n"
                "@pytest.mark.parametrize('n', [1, 2])\n"
                "def test_add_in_worktree(git_worktree, n):\n"
                "    assert 'GIT_INDEX_FILE' not in os.environ\n"
                "    (git_worktree.path / 'generated.txt').write_text('made by the test\\n')\n"
                "    subprocess.run(['git', 'add', 'generated.txt'], cwd=git_worktree.path,\n"
                "                   check=True)\n"
                "    status = subprocess.run(['git', 'status', '--porcelain'],\n"
                "        cwd=git_worktree.path, capture_output=True, text=True, check=True)\n"
                "    assert 'A  generated.txt' in status.stdout.splitlines()\n"
            ),
        }
    )
    command = " ".join([f'"{sys.executable}" -m pytest -q test_gen.py', *xdist])
    _hook(repo / ".git", "pre-commit", f"exec {command}\n")
    (repo / "a.txt").write_text("changed\n")
    commit = subprocess.run(
        ["git", "commit", "-a", "-q", "-m", "the user's change"],
        cwd=repo,
        env=_hook_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    hook_output = commit.stdout + commit.stderr  # git sends a hook's stdout to stderr
    assert commit.returncode == 0, hook_output
    assert "2 passed" in hook_output
    check_inner_warnings(hook_output, "", [])
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "a.txt"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "ls-files") == ".gitignore\na.txt\npytest.ini\ntest_gen.py"
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_a_pre_receive_hooks_quarantine_does_not_reach_git_in_the_worktree(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo(
        {
            "pytest.ini": "[pytest]\nfilterwarnings = error\n",
            ".gitignore": "__pycache__/\n",
            "test_env.py": (
                "import os, subprocess\n"
                "NAMES = ('GIT_OBJECT_DIRECTORY', 'GIT_ALTERNATE_OBJECT_DIRECTORIES',\n"
                "         'GIT_QUARANTINE_PATH')\n"
                "def log(path, env):\n"
                "    return subprocess.run(['git', 'log', '-1', '--format=%H'], cwd=path,\n"
                "                          env=env, capture_output=True, text=True)\n"
                "def test_git_in_worktree(git_worktree):\n"
                "    assert not [name for name in NAMES if name in os.environ]\n"
                "    hook = {name: os.environ['HOOK_' + name] for name in NAMES}\n"
                "    assert all(hook.values()), hook  # the hook really set them\n"
                "    as_in_hook = {**os.environ, **hook}\n"
                "    head = os.environ['USER_HEAD']\n"
                "    # What the hook's variables do to git in the worktree, left in place:\n"
                "    assert 'bad object' in log(git_worktree.path, as_in_hook).stderr\n"
                "    for env in (git_worktree.env(as_in_hook), git_worktree.env(), None):\n"
                "        result = log(git_worktree.path, env)\n"
                "        assert result.returncode == 0, result.stderr\n"
                "        assert result.stdout.strip() == head\n"
            ),
        }
    )
    server = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(server))
    exports = " ".join(
        f'HOOK_{name}="${name}"'
        for name in (
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_QUARANTINE_PATH",
        )
    )
    _hook(
        server,
        "pre-receive",
        f"cat >/dev/null\nexport {exports}\n"
        f'cd "{repo}" && exec "{sys.executable}" -m pytest -q test_env.py\n',
    )
    pusher = tmp_path / "pusher"
    git(tmp_path, "init", "-q", "-b", "main", str(pusher))
    git(pusher, "commit", "-q", "--allow-empty", "-m", "unrelated to the user's repository")
    push = subprocess.run(
        ["git", "push", "-q", str(server), "main"],
        cwd=pusher,
        env=_hook_env(USER_HEAD=git(repo, "rev-parse", "HEAD")),
        capture_output=True,
        text=True,
        check=False,
    )
    hook_output = "\n".join(
        line.removeprefix("remote: ") for line in (push.stdout + push.stderr).splitlines()
    )
    assert push.returncode == 0, hook_output
    assert "1 passed" in hook_output
    check_inner_warnings(hook_output, "", [])
    assert run(repo, "status", "--porcelain").stdout == ""


def test_variables_are_hidden_while_a_worktree_is_out_and_back_after(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = str(tmp_path / "the-hooks-index")
    git(pytester.path, "init", "-q", "-b", "main")
    pytester.makepyfile(
        test_a="""
        import os

        def test_hidden_while_out(git_worktree, aiops_worktree_factory):
            assert "GIT_INDEX_FILE" not in os.environ
            with aiops_worktree_factory.worktree() as inner:
                assert "GIT_INDEX_FILE" not in os.environ
            # git_worktree is still out
            assert "GIT_INDEX_FILE" not in os.environ
            os.environ["GIT_NAMESPACE"] = "set-by-the-test"

        def test_still_hidden_in_the_module(git_worktree):
            assert "GIT_INDEX_FILE" not in os.environ
        """,
        test_b=f"""
        import os

        def test_back_after_the_module():
            assert os.environ["GIT_INDEX_FILE"] == {index!r}
            assert os.environ["GIT_NAMESPACE"] == "set-by-the-test"  # not overwritten
        """,
    )
    git(pytester.path, "add", "-A")
    run(pytester.path, "commit", "-q", "-m", "tests")
    monkeypatch.setenv("GIT_INDEX_FILE", index)
    monkeypatch.setenv("GIT_NAMESPACE", "from-the-hook")
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert not os.path.exists(index)


def test_a_sessions_worktree_hides_them_until_the_session_ends(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = str(tmp_path / "the-hooks-index")
    after = tmp_path / "after-the-session"
    git(pytester.path, "init", "-q", "-b", "main")
    pytester.makeconftest(
        f"""
        import os, pathlib

        def pytest_unconfigure(config):
            pathlib.Path({str(after)!r}).write_text(os.environ.get("GIT_INDEX_FILE", "<unset>"))
        """
    )
    pytester.makepyfile(
        test_a="""
        import os

        def test_hidden(provisioned_session):
            assert provisioned_session.allocation("git-worktree") is not None
            assert "GIT_INDEX_FILE" not in os.environ
        """
    )
    git(pytester.path, "add", "-A")
    run(pytester.path, "commit", "-q", "-m", "tests")
    monkeypatch.setenv("GIT_INDEX_FILE", index)
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", "-p", "no:cacheprovider", "--aiops-resources=port-range,git-worktree"
    )
    result.assert_outcomes(passed=1)
    assert after.read_text() == index
