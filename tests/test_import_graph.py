"""The package graph docs/architecture.md draws, read from the imports themselves (import
statements and importlib calls by name): the library imports no other package of the repository,
the comparison variants and the analysis import only the library, and variants reach the library's
registry as plug-ins (the "longnet.variants" entry points), never by name."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = {"longnet", "baselines", "analysis", "benchmarks", "workflow", "tests", "pipeline_config",
        "job_resources", "config_paths", "dilated_reference", "test_baselines"}
# what each layer may import of the repository (docs/architecture.md, "The package graph")
ALLOWED = {"longnet": {"longnet"}, "baselines": {"longnet", "baselines"},
           "analysis": {"longnet", "analysis"}}


def imported(path: Path) -> set[str]:
    """Top-level names a module imports: absolute import statements, and the string argument of
    importlib.import_module / __import__ calls."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id == "__import__")):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_each_layer_imports_only_what_the_graph_allows():
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((REPO / layer).rglob("*.py")):
            for name in sorted((imported(path) & OURS) - allowed):
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "; ".join(wrong)


def test_variants_arrive_as_plug_ins():
    """The comparison variants register through the entry point pyproject.toml declares, which the
    installed project carries; the library finds them with no name of theirs in its code."""
    import importlib.metadata

    import tomllib
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["longnet.variants"] == {"baselines": "baselines"}
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="longnet.variants")}
    assert installed.get("baselines") == "baselines", installed
    from longnet.variants import available
    assert {"vanilla", "sparse_fixed", "sparse_strided", "longformer", "blockwise_causal",
            "longnet"} <= set(available())


def test_the_scan_sees_a_dynamic_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import importlib\nimportlib.import_module('baselines.vanilla')\n"
                      "from analysis.io import write_csv\n")
    assert imported(module) == {"importlib", "baselines", "analysis"}
