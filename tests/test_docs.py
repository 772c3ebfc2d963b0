"""The documentation holds together.

- every relative link in every Markdown file resolves to a file, and a `#anchor` to a heading
  (GitHub's slugs);
- every `docs/....md` path cited in the sources, the Markdown, pyproject, the Makefile and the
  shell scripts exists;
- every quoted section (`docs/reference/model.md, "How the paper scores"`) and numbered point
  (`docs/reference/model.md, point 4`) a citation names is a heading of that page;
- no file cites documents outside the repository (the workplace's `../shared` notes), which
  users do not have;
- the README stays short and names the test command.

Each check is a function of a tree's root that returns its problems, so the tests below run it
on this repository (no problems) and on a small broken tree (each problem found). Pure file
reading: no git, no subprocess. "The project's files" are those git would track: the tree less
`.git` and what the .gitignore files ignore (new, not yet committed pages included).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()
README_MAX_LINES = 250
# Files whose text may cite docs pages: sources, Markdown, configuration, build and shell scripts.
CITING_SUFFIXES = {".py", ".md", ".toml", ".sh"}
CITING_NAMES = {"Makefile"}
# A `docs/x.md` right after another project's name is that project's file, not ours.
FOREIGN_BEFORE = re.compile(r"(?:onnx-tensorrt|[\w.-]+/[\w.-]+)(?:'s)?\s+`?$")

DOCS_PATH = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md)")
# `docs/x.md, "Section"`, `docs/x.md's "Section"`, `docs/x.md ("Section")`, and single quotes.
SECTION_CITATION = re.compile(
    r"(?<![\w./-])(docs/[\w./-]*?\.md)`?(?:'s)?(?=[,\s(])[,\s(]*"
    r"(?:\"([A-Za-z0-9][^\"]{0,159})\"|'(?!s\s)([A-Za-z0-9][^']{0,159})')"
)
OUTSIDE = re.compile(r"(?:\.\./)+shared/|/work/shared\b")
POINT_CITATION = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md)`?,?\s+points?\s+(\d+)\b")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


# --- the project's files ----------------------------------------------------------------------


def _ignore_patterns(directory: Path, base: str) -> list[tuple[str, str, bool, bool]]:
    """(base, pattern, anchored, directories only) for each line of `directory`'s .gitignore;
    `base` is the directory relative to the root ("" for the root)."""
    path = directory / ".gitignore"
    patterns = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "!")):
                continue
            core = line.strip("/")
            patterns.append((base, core, line.startswith("/") or "/" in core, line.endswith("/")))
    return patterns


def _ignored(rel: str, is_dir: bool, patterns) -> bool:
    for base, core, anchored, dir_only in patterns:
        if dir_only and not is_dir:
            continue
        if base and not rel.startswith(base + "/"):
            continue
        inside = rel[len(base) + 1 :] if base else rel
        if fnmatch.fnmatch(inside if anchored else inside.rsplit("/", 1)[-1], core):
            return True
    return False


def project_files(root: Path) -> list[Path]:
    """Every file under `root` that git would track: the tree less .git and what the .gitignore
    files ignore (each applies to its own directory and below)."""
    patterns: list[tuple[str, str, bool, bool]] = []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        base = "" if base == "." else base
        patterns += _ignore_patterns(Path(dirpath), base)
        prefix = f"{base}/" if base else ""
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and not _ignored(prefix + d, True, patterns))
        found += [Path(dirpath) / f for f in sorted(filenames) if not _ignored(prefix + f, False, patterns)]
    return found


def _citing_files(root: Path) -> list[Path]:
    return [p for p in project_files(root) if (p.suffix in CITING_SUFFIXES or p.name in CITING_NAMES) and p.resolve() != SELF]


# --- Markdown: headings, slugs, links ---------------------------------------------------------


def _lines_and_fencing(text: str):
    """(line, inside a fenced code block) for each line but the fences themselves."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        yield line, fenced


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code spans blanked."""
    return ["" if fenced else re.sub(r"`[^`]*`", "``", line) for line, fenced in _lines_and_fencing(text)]


def _heading_text(raw: str) -> str:
    """A heading as GitHub renders it: link text kept, code and emphasis marks dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    return text.replace("`", "").replace("*", "")


def headings(text: str) -> list[str]:
    """The ATX headings of a Markdown text, outside fenced code, as rendered text."""
    matches = (HEADING.match(line) for line, fenced in _lines_and_fencing(text) if not fenced)
    return [_heading_text(match.group(2)).strip() for match in matches if match]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(root: Path) -> list[str]:
    """Relative links of the project's Markdown files that point at no file, or at no heading."""
    problems = []
    for md in (p for p in project_files(root) if p.suffix == ".md"):
        text = md.read_text()
        for lineno, line in enumerate(_prose_lines(text), 1):
            for match in LINK.finditer(line):
                target = match.group(1)
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                where = f"{md.relative_to(root)}:{lineno}: {target}"
                path_part, _, anchor = target.partition("#")
                if path_part:
                    dest = (root / path_part.lstrip("/")) if path_part.startswith("/") else (md.parent / path_part)
                    if not dest.exists():
                        problems.append(f"{where}: no such file")
                        continue
                else:
                    dest = md
                if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                    problems.append(f"{where}: no heading with that anchor in {dest.relative_to(root)}")
    return problems


# --- citations of docs pages in the project's files ------------------------------------------


def _cited_paths(root: Path):
    """(citing file, docs path) for every `docs/....md` the project's files name."""
    for path in _citing_files(root):
        text = path.read_text(errors="replace")
        for match in DOCS_PATH.finditer(text):
            before = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
            if not FOREIGN_BEFORE.search(before):
                yield path, match.group(1)


def missing_cited_pages(root: Path) -> list[str]:
    return sorted({f"{path.relative_to(root)}: {cited}" for path, cited in _cited_paths(root) if not (root / cited).is_file()})


def _joined(text: str) -> str:
    """Text with line breaks (and a comment's `#` continuing it) as single spaces."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _section_names(page: Path) -> list[str]:
    """A page's headings, lower case, with and without a leading "N. "."""
    names = []
    for heading in headings(page.read_text()):
        names.append(_norm(heading))
        names.append(_norm(re.sub(r"^\d+\.\s*", "", heading)))
    return names


def missing_cited_sections(root: Path) -> list[str]:
    """Quoted sections and numbered points that citations name but their page lacks.

    A quoted section matches a heading that starts with it (case and spacing aside, a leading
    "N. " dropped): `"Limits used by the public SDK"` names "Limits used by the public SDK for
    X5/L5". A point N matches a heading that starts with "N."."""
    problems = set()
    for path in _citing_files(root):
        text = _joined(path.read_text(errors="replace"))
        for match in SECTION_CITATION.finditer(text):
            cited, quoted = match.group(1), match.group(2) or match.group(3)
            page = root / cited
            if not page.is_file():
                continue  # missing_cited_pages reports it
            want = _norm(quoted).rstrip(" .,;:")
            if not any(name.startswith(want) for name in _section_names(page)):
                problems.add(f'{path.relative_to(root)}: {cited}, "{quoted}": no such heading')
        for match in POINT_CITATION.finditer(text):
            cited, point = match.group(1), match.group(2)
            page = root / cited
            if page.is_file() and not any(re.match(rf"{point}\.(\s|$)", h) for h in headings(page.read_text())):
                problems.add(f'{path.relative_to(root)}: {cited}, point {point}: no heading "{point}. ..."')
    return sorted(problems)


def outside_citations(root: Path) -> list[str]:
    """Citations of documents outside the repository."""
    return [
        f"{path.relative_to(root)}: {match.group(0)}"
        for path in _citing_files(root)
        for match in OUTSIDE.finditer(path.read_text(errors="replace"))
    ]


def readme_problems(root: Path) -> list[str]:
    readme = root / "README.md"
    if not readme.is_file():
        return ["README.md: missing"]
    text = readme.read_text()
    problems = []
    lines = len(text.splitlines())
    if lines > README_MAX_LINES:
        problems.append(f"README.md: {lines} lines, more than {README_MAX_LINES}")
    if "make test" not in text:
        problems.append("README.md: does not name `make test`, the test command")
    return problems


# --- this repository --------------------------------------------------------------------------


def test_every_relative_link_resolves():
    assert broken_links(REPO) == []


def test_every_cited_docs_page_exists():
    assert missing_cited_pages(REPO) == []


def test_every_cited_section_is_a_heading():
    assert missing_cited_sections(REPO) == []


def test_no_citation_points_outside_the_repository():
    assert outside_citations(REPO) == []


def test_the_readme_is_short_and_names_the_test_command():
    assert readme_problems(REPO) == []


def test_the_reference_pages_are_cited_and_found():
    """The checks see the citations that matter: the code cites each reference page by section."""
    cited = {c for _, c in _cited_paths(REPO)}
    assert {"docs/reference/model.md", "docs/reference/arx.md", "docs/reference/deploy.md"} <= cited
    assert any(p.name == "README.md" and p.parent == REPO for p in project_files(REPO))
    assert not any(".venv" in p.parts or ".git" in p.parts for p in project_files(REPO))


# --- the checks on a broken tree --------------------------------------------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# A small project whose links and citations all resolve, with the cases the checks must skip.
SOUND_TREE = {
    ".gitignore": "out/\n*.log\n",
    "docs/guide.md": "# Guide\n\n## The `cpu` target: fast\n\n### 4. Reasoning following\n\n## Limits\n\n## Limits\n",
    "docs/other.md": "# Other\n\nBack to [the guide](guide.md#limits-1).\n",
    "README.md": "# Project\n\nRun `make test`.\n\n"
    "[guide](docs/guide.md), [target](docs/guide.md#the-cpu-target-fast),\n"
    "[site](https://example.org/x.md), [mail](mailto:a@b.c), [self](#project)\n\n"
    "```\n[not a link](nowhere.md)\n```\n\n`[code](nowhere.md)`\n",
    "out/notes.md": "[ignored](missing.md)\n",
    "cache/.gitignore": "*\n",
    "cache/page.md": "[ignored too](missing.md), docs/missing.md\n",
    "pkg/mod.py": '"""See docs/guide.md, "The cpu target" and docs/guide.md point 4.\n\n'
    "Also docs/guide.md's 'Limits', docs/guide.md's limits list, `docs/guide.md`,\n"
    '"Reasoning following", and onnx-tensorrt docs/operators.md."""\n'
    'NOTES = {"a": "not in docs/guide.md", "b": "c"}\n',
}


def _tree(tmp_path: Path) -> Path:
    for rel, text in SOUND_TREE.items():
        _write(tmp_path, rel, text)
    return tmp_path


def test_a_sound_tree_has_no_problems(tmp_path):
    root = _tree(tmp_path)
    assert broken_links(root) == []
    assert missing_cited_pages(root) == []
    assert missing_cited_sections(root) == []
    assert outside_citations(root) == []
    assert readme_problems(root) == []
    files = {p.relative_to(root).as_posix() for p in project_files(root)}
    assert {"README.md", "docs/guide.md", "docs/other.md", "pkg/mod.py", ".gitignore"} <= files
    assert not files & {"out/notes.md", "cache/page.md"}


BROKEN = {  # what is added to a sound tree -> the checker -> the problems it must report
    "a link to a missing file": (
        {"docs/extra.md": "# Extra\n\nSee [nothing](missing.md) and [the readme](../README.md).\n"},
        broken_links,
        ["docs/extra.md:3: missing.md: no such file"],
    ),
    "a cited page that does not exist": (
        {"Makefile": "# the steps: docs/build.md\n", "pkg/other.py": "# docs/guide.md is fine; docs/reference/gone.md is not\n"},
        missing_cited_pages,
        ["Makefile: docs/build.md", "pkg/other.py: docs/reference/gone.md"],
    ),
    "a cited section that is not a heading": (
        {"pkg/other.py": '# (docs/guide.md, "The gpu\n# target") and docs/guide.md point 5\nX = "docs/guide.md, \'Limits\'"\n'},
        missing_cited_sections,
        ['pkg/other.py: docs/guide.md, "The gpu target": no such heading', 'pkg/other.py: docs/guide.md, point 5: no heading "5. ..."'],
    ),
    "a citation outside the repository": (
        {"pkg/other.py": "# the sizes worked out in ../shared/docs/model.md\n"},
        outside_citations,
        ["pkg/other.py: ../shared/"],
    ),
    "a long readme without the test command": (
        {"README.md": "# Project\n" + "line\n" * README_MAX_LINES},
        readme_problems,
        [
            f"README.md: {README_MAX_LINES + 1} lines, more than {README_MAX_LINES}",
            "README.md: does not name `make test`, the test command",
        ],
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_tree_is_found(tmp_path, case):
    files, check, expected = BROKEN[case]
    root = _tree(tmp_path)
    for path, text in files.items():
        _write(root, path, text)
    assert check(root) == expected


def test_a_link_to_a_missing_heading_is_found(tmp_path):
    root = _tree(tmp_path)
    _write(root, "docs/extra.md", "# Extra\n\n[a](guide.md#limits-2), [b](#nowhere), [c](#extra)\n")
    problems = broken_links(root)
    assert len(problems) == 2, problems
    assert problems[0].startswith("docs/extra.md:3: guide.md#limits-2: no heading")
    assert problems[1].startswith("docs/extra.md:3: #nowhere: no heading")


def test_github_slugs():
    assert slug("Starting from real weights: Qwen2-VL and ScaleDP") == "starting-from-real-weights-qwen2-vl-and-scaledp"
    assert slug("5. Two-stage training") == "5-two-stage-training"
    assert (
        slug(_heading_text("The TensorRT-form bundles on the CPU, and `chatvla2 run`"))
        == "the-tensorrt-form-bundles-on-the-cpu-and-chatvla2-run"
    )
    assert anchors("# A\n\n## A\n\n```\n# not a heading\n```\n") == {"a", "a-1"}
