"""Every code block in README.md and docs/**/*.md is true: Python runs, TOML parses, commands exist.

* ```python blocks run, each in a fresh namespace with a temporary working directory. A block
  preceded by ``<!-- doc: continue -->`` runs in the namespace of the page's previous Python block
  (one test for the chain). ``<!-- doc: needs-data -->``: the block reads the real datasets; it gets
  ``CIMKIT_DATA`` pointing at them, and skips with the reason when they are absent (fails under
  ``CIMKIT_REQUIRE_DATA=1``). ``<!-- doc: no-run: REASON -->`` skips a block, and needs a reason.
  Other blocks get an empty ``CIMKIT_DATA`` folder, so a block that silently needs files fails.
* ```toml blocks are experiment files (or ``[[variants]]`` fragments of one): each is parsed by
  :meth:`cimkit.experiment.ExperimentConfig.from_toml`, which validates every field.
* ```bash blocks are not run, but every ``cimkit ...`` command in them must parse with the real
  argument parser, every ``make`` target must exist and every repository path they name must exist.
* The measured tables in docs/ match benchmarks/results/*.json (``docs/gen_tables.py --check``).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cimkit.cli import build_parser
from cimkit.experiment import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARK = re.compile(r"^<!--\s*doc:\s*(?P<what>[\w-]+)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")
KNOWN_MARKS = {"continue", "needs-data", "no-run", "not-an-experiment", "run"}
REAL_DATA = re.compile(r"""load_dataset\(\s*["'](mnist|fashion[-_]mnist|cifar10|tinyshakespeare)["']|CIMKIT_DATA""")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the code's first line
    lang: str
    code: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start("body")) + 1
        marks: dict[str, str] = {}
        lines = text[: m.start()].splitlines()
        while lines and (mk := MARK.match(lines[-1].strip())):  # marker lines right above the fence
            marks[mk["what"]] = mk["reason"] or ""
            lines.pop()
        body = textwrap.dedent(m["body"]) if m["indent"] else m["body"]  # a block inside a list item
        out.append(Block(page, first, m["lang"].lower(), body, marks))
    return out


ALL = [b for p in PAGES for b in blocks(p)]


def python_chains() -> list[list[Block]]:
    chains: list[list[Block]] = []
    last_page = None
    for b in ALL:
        if b.lang != "python":
            continue
        if "continue" in b.marks:
            assert chains and last_page == b.page, f"{b.where}: 'continue' needs an earlier Python block on the page"
            assert "no-run" not in chains[-1][-1].marks, f"{b.where}: continues a block that does not run"
            chains[-1].append(b)
        else:
            chains.append([b])
        last_page = b.page
    return chains


CHAINS = python_chains()


def test_pages_have_blocks_and_markers_are_known() -> None:
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5
    assert sum(b.lang == "python" for b in ALL) >= 10
    for b in ALL:
        assert b.lang in ("python", "toml", "bash", "text", "json", ""), f"{b.where}: unexpected language {b.lang!r}"
        unknown = set(b.marks) - KNOWN_MARKS
        assert not unknown, f"{b.where}: unknown doc marker(s) {sorted(unknown)}; known: {sorted(KNOWN_MARKS)}"
        if "no-run" in b.marks or "not-an-experiment" in b.marks:
            reason = b.marks.get("no-run", b.marks.get("not-an-experiment"))
            assert len(reason) > 10, f"{b.where}: an opt-out marker needs a reason"
        if b.lang == "python" and REAL_DATA.search(b.code) and "no-run" not in b.marks:
            assert "needs-data" in b.marks, f"{b.where}: reads the real datasets; mark it <!-- doc: needs-data -->"


@pytest.mark.parametrize("chain", CHAINS, ids=[c[0].where for c in CHAINS])
def test_python_block_runs(
    chain: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if "no-run" in chain[0].marks:
        pytest.skip(f"{chain[0].where}: {chain[0].marks['no-run']}")
    if any("needs-data" in b.marks for b in chain):
        monkeypatch.setenv("CIMKIT_DATA", str(request.getfixturevalue("datasets_dir")))
    else:
        (tmp_path / "no-data").mkdir()
        monkeypatch.setenv("CIMKIT_DATA", str(tmp_path / "no-data"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    mod = types.ModuleType("__doc_snippet__")  # a real module: dataclasses and pickling look it up
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    namespace: dict[str, object] = mod.__dict__
    for b in chain:
        # padded so tracebacks point at the page's own line numbers
        exec(compile("\n" * (b.line - 1) + b.code, str(b.page), "exec"), namespace)


TOMLS = [b for b in ALL if b.lang == "toml"]


@pytest.mark.parametrize("block", TOMLS, ids=[b.where for b in TOMLS])
def test_toml_block_is_a_valid_experiment(block: Block) -> None:
    if "not-an-experiment" in block.marks:
        pytest.skip(f"{block.where}: {block.marks['not-an-experiment']}")
    cfg = ExperimentConfig.from_toml(block.code)
    assert cfg.variant_specs(), block.where


RUN_TOMLS = [b for b in TOMLS if "run" in b.marks]


@pytest.mark.parametrize("block", RUN_TOMLS, ids=[b.where for b in RUN_TOMLS])
def test_toml_block_marked_run_runs_as_shown(block: Block, tmp_path: Path) -> None:
    """An experiment file presented as runnable (``<!-- doc: run -->``) finishes as shown."""
    from cimkit.experiment import run_experiment

    res = run_experiment(ExperimentConfig.from_toml(block.code), tmp_path / "run", progress=False)
    assert res["complete"] and len(res["variants"]) == len(ExperimentConfig.from_toml(block.code).variants)


def _commands(code: str) -> list[list[str]]:
    out = []
    for raw in code.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("$ "):
            continue
        for part in re.split(r"\s*(?:;|&&|\|\|?)\s*", line):  # ; && || and pipes
            argv = shlex.split(part)
            cut = next((i for i, a in enumerate(argv) if re.match(r"\d?[<>]", a)), len(argv))
            argv = argv[:cut]  # drop redirections
            while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # VAR=value prefixes
                argv.pop(0)
            if argv:
                out.append(argv)
    return out


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w.-]+):", text, re.M))


BASH = [b for b in ALL if b.lang == "bash"]


@pytest.mark.parametrize("block", BASH, ids=[b.where for b in BASH])
def test_bash_block_commands_exist(block: Block) -> None:
    parser = build_parser()
    targets = _make_targets()
    for argv in _commands(block.code):
        prog = Path(argv[0]).name
        if prog == "cimkit":
            try:
                parser.parse_args(argv[1:])
            except SystemExit as e:
                pytest.fail(f"{block.where}: `{shlex.join(argv)}` is not a valid cimkit command ({e})")
        elif prog == "make":
            for t in (a for a in argv[1:] if "=" not in a and not a.startswith("-")):
                assert t in targets, f"{block.where}: make has no target {t!r}"
        for a in argv[1:]:
            if re.fullmatch(r"(examples|benchmarks|docs|tests|src)/[\w./-]+\.(toml|py|json|md)", a):
                assert (ROOT / a).is_file(), f"{block.where}: {a} does not exist"


def test_generated_tables_match_the_results_json() -> None:
    spec = importlib.util.spec_from_file_location("gen_tables", ROOT / "docs" / "gen_tables.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    pages = sorted((ROOT / "docs").rglob("*.md"))
    marked = [p for p in pages if gen.MARKER.search(p.read_text(encoding="utf-8"))]
    assert marked, "no page has a generated table"
    for p in marked:
        text = p.read_text(encoding="utf-8")
        assert gen.render(text, str(p)) == text, f"{p}: stale tables; run python docs/gen_tables.py"


def _anchors(page: Path) -> set[str]:
    """Heading slugs as MkDocs (Python-Markdown's toc) and GitHub make them."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h.replace("`", "")).strip().lower()) for h in heads}


def test_readme_links_point_at_existing_pages_and_headings() -> None:
    text = FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [u for u in links if not re.match(r"[a-z]+:", u)]
    assert len(local) >= 5
    for url in local:
        path, _, anchor = url.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README.md links to {url}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"README.md links to {url}: {path} has no heading #{anchor}"
