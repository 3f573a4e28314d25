"""Which configuration a run gets (Snakefile): no --configfile loads workflow/configs/default.yaml
with any --config KEY=VALUE on top; an empty configuration file is an error naming it, never a
silent run of the default configuration (which writes the committed results/)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def planned_outputs(stdout: str) -> set[str]:
    return set(re.findall(r"^\s+output: (.*)$", stdout, re.M))


@pytest.mark.parametrize("text", ["{}\n", "# nothing but a comment\n{}\n"])
@pytest.mark.slow
def test_an_empty_configuration_file_is_an_error_naming_it(text, tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    run = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert run.returncode != 0, "an empty configuration file ran the default configuration"
    assert f"configuration file {path} is empty" in run.stdout + run.stderr
    assert "Job stats" not in run.stdout


@pytest.mark.parametrize("text", ["", "[1, 2]\n", "just a string\n"])
@pytest.mark.slow
def test_a_configuration_file_that_is_not_a_mapping_is_refused(text, tmp_path):
    """Snakemake refuses these itself, before the Snakefile is read (its message does not name
    the file); what matters here is that none of them plans or runs a job."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    run = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert run.returncode != 0
    assert "Job stats" not in run.stdout
    assert "keys at top level" in run.stdout + run.stderr


@pytest.mark.slow
def test_the_documented_site_resources_override_runs_on_the_default_configuration(tmp_path):
    """workflow/README.md: `--config site_resources=my-site/site_resources.yaml` with no
    --configfile is the default configuration with that one key changed."""
    site = tmp_path / "my-site" / "site_resources.yaml"
    site.parent.mkdir()
    site.write_text((REPO / "workflow" / "site_resources.yaml").read_text())
    run = snakemake("-n", "--config", "site_resources=my-site/site_resources.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Job stats" in run.stdout
    plain = snakemake("-n", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    # the same DAG as the plain default run: the default's results_dir and every job
    assert planned_outputs(run.stdout) == planned_outputs(plain.stdout)
    assert any(o.startswith("results/tables/") for o in planned_outputs(run.stdout))
    # and the override is applied: a site file that does not exist is refused naming it
    missing = snakemake("-n", "--config", "site_resources=no/such.yaml", cwd=tmp_path)
    assert missing.returncode != 0
    assert "no/such.yaml" in missing.stdout + missing.stderr
