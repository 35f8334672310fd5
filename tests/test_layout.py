"""The package's import graph flows one way (parsed from the source, nothing imported)."""

import ast
from pathlib import Path

import qdaif

ROOT = Path(qdaif.__file__).parent
ENGINE = ["search.py", "algorithms.py", "archive.py", "feedback.py", "operators.py", "domain.py", "run_dir.py",
          "plugin.py", "embeddings.py", "lm"]
ANALYSIS = ["plot.py", "report.py", "compare.py", "human_eval.py", "export_lmeval.py", "plugins/rewrites/tta.py"]


def imports(path: Path) -> dict[str, set[str]]:
    """Module -> names it imports (``from m import a`` gives ``m`` and ``m.a``), at any depth in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def files(names):
    for name in names:
        p = ROOT / name
        yield from sorted(p.rglob("*.py")) if p.is_dir() else [p]


def test_the_engine_imports_no_plotting_or_analysis():
    banned = ("qdaif.plot", "qdaif.report", "qdaif.compare", "qdaif.human_eval", "qdaif.runs", "matplotlib")
    for path in files(ENGINE):
        bad = sorted(m for m in imports(path) if m.startswith(banned))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_cli_knows_no_particular_plugin():
    for path in files(["cli"]):
        bad = sorted(m for m in imports(path) if m.startswith("qdaif.plugins"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_cli_is_split_by_command():
    modules = {p.name for p in files(["cli"])}
    assert {"__init__.py", "run.py", "judge.py", "analysis.py"} <= modules and not (ROOT / "cli.py").exists()


def test_analysis_modules_read_runs_only_through_the_run_reader():
    readers = {"qdaif.plot.load_run", "qdaif.plot.RunData", "qdaif.plot.read_jsonl", "qdaif.plot.as_run",
               "qdaif.run_dir.RunDir.read_jsonl"}
    for path in files(ANALYSIS):
        names = imports(path)
        assert not names & readers, f"{path.relative_to(ROOT)} reads runs outside qdaif.runs: {sorted(names & readers)}"
        if path.name != "plot.py":
            assert any(m.startswith("qdaif.runs") for m in names), f"{path.relative_to(ROOT)} does not use qdaif.runs"
    assert "def read_jsonl" not in (ROOT / "runs.py").read_text() + (ROOT / "plot.py").read_text()
