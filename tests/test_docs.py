"""The README and the documentation pages say what the code does.

The README's commands are the ones CI runs, its code blocks compile, its ten-line example and
the Core API example (README and docs/api.md) run as written, every option and file they name
exists, every setting is documented in the options page and every public name in the API
reference.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_aiops
from pytest_aiops._plugin.settings import OPTIONS

from .git_helpers import git
from .process_helpers import child_env

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
DEMO_COMMAND = "python -m pip install -e '.[test]' && python -m pytest -n 4 examples"
TEST_COMMAND = "python -m pip install -e '.[test]' && python -m pytest"
INSTALL_COMMAND = "python -m pip install pytest-aiops"
DOCS_SITE = "https://pytest-aiops.readthedocs.io/en/latest/"
REPOSITORY = "https://github.com/pytest-aiops/pytest-aiops/"

pytest_plugins = ["pytester"]


def blocks(path: Path, *languages: str) -> list[str]:
    """The fenced code blocks of ``path`` in one of ``languages``."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
    return [m.group(2) for m in fence.finditer(path.read_text()) if m.group(1) in languages]


def shell_lines(path: Path) -> list[str]:
    """The commands of the ``sh`` / ``console`` blocks of ``path``, comments dropped."""
    lines = []
    for block in blocks(path, "sh", "console"):
        for line in block.splitlines():
            command = line.removeprefix("$ ")
            if command.startswith(("python", "pytest", "AIOPS_")):  # not output, not comments
                lines.append(command.split("  #", 1)[0].strip())
    return lines


def test_readme_is_short_and_links_only_to_pages_that_exist() -> None:
    text = README.read_text()
    # Link reference definitions (``[name]: https://...``) are targets, not text to read.
    prose = [line for line in text.splitlines() if not re.match(r"\[[\w-]+\]: ", line)]
    assert len(prose) <= 150
    inline = re.findall(r"\]\(([^)]+)\)", text)
    defined = re.findall(r"^\[[\w-]+\]: (\S+)$", text, re.M)
    used = set(re.findall(r"\]\[([\w-]+)\]", text))
    assert used == set(re.findall(r"^\[([\w-]+)\]: ", text, re.M))
    assert defined
    for link in [*inline, *defined]:
        # Absolute, so they work on the package index's page too; each names a real page/file.
        if link.startswith(DOCS_SITE):
            page = link.removeprefix(DOCS_SITE).split("#")[0].removesuffix(".html") or "index"
            assert (DOCS / f"{page}.md").is_file(), link
        else:
            assert link.startswith(REPOSITORY), link
            path = re.sub(r"^(blob|tree)/main/", "", link.removeprefix(REPOSITORY))
            assert (ROOT / path).exists(), link


def test_readme_commands_are_the_ones_ci_runs() -> None:
    text = README.read_text()
    assert f"```sh\n{DEMO_COMMAND}\n```" in text
    assert f"```sh\n{TEST_COMMAND}\n```" in text
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci
    assert "python -m pytest -n 4 examples" in ci


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_python_blocks_compile(path: Path) -> None:
    for block in blocks(path, "python"):
        ast.parse(block, filename=str(path))


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_shell_commands_name_real_files_extras_and_options(path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^(\w+) = \[", section, re.M))
    assert {"test", "docs"} <= extras
    for line in shell_lines(path):
        for extra in re.findall(r"'\.\[(\w+)\]'", line):
            assert extra in extras, line
        for word in line.split():
            if word.startswith("docs/_build"):
                continue  # the docs build's output directory, made by the command itself
            if re.fullmatch(r"(examples|docs|tests|bench)(/[\w./]*)?", word):
                assert (ROOT / word).exists(), line
            if word.startswith("--aiops-"):
                assert word.split("=")[0] in {o.cli for o in OPTIONS}, line


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_every_aiops_option_named_exists(path: Path) -> None:
    known = {o.cli for o in OPTIONS}
    named = set(re.findall(r"--aiops-[a-z-]*[a-z]", path.read_text()))
    assert named <= known, named - known


def test_every_setting_is_documented_on_the_options_page() -> None:
    page = (DOCS / "fixtures.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `--aiops-")]
    for option in OPTIONS:
        row = next((r for r in rows if r.startswith(f"| `{option.cli}")), None)
        assert row is not None, f"{option.cli} is not in the options table of docs/fixtures.md"
        assert f"`{option.ini}`" in row
        assert f"`{option.env}`" in row
    assert len(rows) == len(OPTIONS)


def test_every_public_name_is_in_the_api_reference() -> None:
    page = (DOCS / "api.md").read_text()
    documented = re.findall(r"^\.\. auto(?:class|function|exception):: (\w+)", page, re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(pytest_aiops.__all__) - {"__version__"}


#: reStructuredText's inline literals and roles, with its rules for what may stand around
#: them: ``x``..``y`` or ``text: `` (a space before the end) render as raw backticks.
_BEFORE = r"(?<![^\s'\"(\[{<\-/:])"
_AFTER = r"(?=$|[\s'\")\]}>\-/:.,;!?\\])"
_MARKUP = re.compile(
    rf"{_BEFORE}``(?=\S)(?:[^`]|`(?!`))*?(?<=\S)``{_AFTER}"
    rf"|{_BEFORE}:[\w:.+-]+:`(?=\S)[^`]*?(?<=\S)`{_AFTER}",
    re.MULTILINE,
)


def _rendered_docstrings() -> list[tuple[str, str]]:
    """(name, docstring) of every public name and of the members autodoc renders."""
    found: list[tuple[str, str]] = []
    seen: set[int] = set()

    def visit(name: str, obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            found.append((name, doc))
        if inspect.isclass(obj):
            for attribute, member in vars(obj).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                target = getattr(member, "fget", None) or getattr(member, "__func__", member)
                if callable(target):
                    visit(f"{name}.{attribute}", target)

    for name in pytest_aiops.__all__:
        if name != "__version__":
            visit(name, getattr(pytest_aiops, name))
    return found


def test_rendered_docstrings_have_no_raw_backticks() -> None:
    raw = [
        f"{name}: {line.strip()}"
        for name, doc in _rendered_docstrings()
        for line in _MARKUP.sub("", doc).splitlines()
        if "`" in line
    ]
    assert raw == []


def test_the_backtick_check_can_fail() -> None:
    for bad in ("``a``..``b``", "starts with ``failed: `` here", "a `single` one"):
        assert "`" in _MARKUP.sub("", bad), bad
    for good in ("``a`` to ``b``", ":class:`X` and ``y``.", "(``z``)"):
        assert "`" not in _MARKUP.sub("", good), good


def test_cli_options_in_the_docs_exist() -> None:
    page = (DOCS / "cli.md").read_text()
    helps = ""
    for command in ("run", "status", "gc"):
        assert re.search(rf"^## `pytest-aiops {command}\b", page, re.M), command
        helps += subprocess.run(
            [sys.executable, "-m", "pytest_aiops", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=child_env(),
        ).stdout
    for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", page)):
        if not option.startswith("--aiops-"):  # those are pytest's, checked above
            assert option in helps, f"pytest-aiops has no {option}"


def test_the_readme_example_runs(
    pytester: pytest.Pytester, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = next(b for b in blocks(README, "python") if "def test_" in b)
    assert len(example.strip().splitlines()) <= 10
    pytester.makepyfile(test_example=example)
    git(pytester.path, "init", "-q", "-b", "main")
    git(pytester.path, "add", "-A")
    git(pytester.path, "commit", "-q", "-m", "snapshot")
    for key in list(os.environ):
        if key.startswith("PYTEST_AIOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(lock_dir))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert git(pytester.path, "status", "--porcelain") == ""


@pytest.mark.parametrize("page", [README, ROOT / "docs" / "api.md"], ids=lambda p: p.name)
def test_core_api_example_runs(repo: Path, lock_dir: Path, page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    heading = re.search(r"^#+ Core API$", text, re.MULTILINE)
    assert heading is not None
    match = re.search(r"```python\n(.*?)```", text[heading.end() :], re.DOTALL)
    assert match is not None
    env = child_env(
        {
            "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
            "PYTEST_AIOPS_LOCK_DIR": str(lock_dir),
            "HOME": str(repo.parent),
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    port = re.search(r"serving on (\d+)", result.stdout)
    assert port is not None
    assert "- Primary port: " + port.group(1) in result.stdout
    assert result.stdout.rstrip().endswith("Fix the failing test.")
    # Released: the user's repository has no extra worktree left.
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "status", "--porcelain") == ""
