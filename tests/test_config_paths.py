"""No configuration value reaches a shell unquoted, and output folders and ids are checked at load
(workflow/config_paths.py): a hostile results_dir or work_dir runs nothing, by a real run."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from pipeline_config import ConfigError, check_config, read_config  # noqa: E402

SMOKE = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())


def snakemake(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, **changes) -> Path:
    config = yaml.safe_load(yaml.safe_dump(SMOKE))  # a deep copy
    config["distributed"]["world_sizes"] = [1]  # one cheap sequence_parallel job
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def checked(**changes):
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config.update(changes)
    return check_config(config, local=False, dry_run=True)


# each would run `touch MARK` if it reached a shell unquoted; no whitespace, so the load checks
# let them through and only the quoting in the rules stands between them and the shell
QUOTED_ONLY = {"work_dir": "runs/inj$(touch$IFS'MARK')w",
               "results_dir": "runs/r;touch$IFS'MARK';#"}


@pytest.mark.slow
def test_shell_metacharacters_in_paths_reach_no_shell_in_a_real_run(tmp_path):
    """A real (not dry) run of a shell rule (sequence_parallel: torchrun, writing {output} under
    work_dir and {log} under results_dir) with both hostile folders: it runs, writes its output
    where the configuration says, and nothing else runs."""
    config = write_config(tmp_path / "inj.yaml", **QUOTED_ONLY)
    target = f"{QUOTED_ONLY['work_dir']}/distributed/P1.csv"
    run = snakemake(target, "--cores", "1", "--configfile", str(config), cwd=tmp_path)
    assert not (tmp_path / "MARK").exists(), "a configuration value ran as a shell command"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / target).is_file()
    assert (tmp_path / QUOTED_ONLY["results_dir"] / "logs" / "distributed" / "P1.log").is_file()


@pytest.mark.parametrize("key, value", [
    ("work_dir", "runs/inj$(touch MARK)w"),
    ("results_dir", "runs/r; touch MARK; #"),
])
@pytest.mark.slow
def test_injection_strings_are_refused_before_any_job_runs(key, value, tmp_path):
    """The strings of issue 24, in a real run of a cheap target: refused at load, naming the key;
    no job ran (no marker, no output folder)."""
    config = write_config(tmp_path / "inj.yaml", **{key: value})
    work = value if key == "work_dir" else SMOKE["work_dir"]
    run = snakemake(f"{work}/distributed/P1.csv", "--cores", "1", "--configfile", str(config),
                    cwd=tmp_path)
    assert run.returncode != 0
    assert f"config key '{key}'" in run.stdout + run.stderr
    assert "relative path inside the working directory" in run.stdout + run.stderr
    assert not (tmp_path / "MARK").exists()
    assert not (tmp_path / "runs").exists(), "a job started"


@pytest.mark.parametrize("key, value, problem", [
    ("results_dir", "/tmp/results", "absolute path"),
    ("results_dir", "~/results", "absolute path"),
    ("work_dir", ".", "'.' or '..'"),
    ("work_dir", "runs/../..", "'.' or '..'"),
    ("results_dir", "runs/./x", "'.' or '..'"),
    ("results_dir", "runs/", "trailing '/'"),
    ("results_dir", "runs//x", "doubled"),
    ("work_dir", "workflow/work", "holds the project's code"),
    ("results_dir", "longnet", "holds the project's code"),
    ("results_dir", "tests/out", "holds the project's code"),
    ("work_dir", ".git/x", "holds the project's code"),
    ("results_dir", "runs/x\n", "'\\n'"),
    ("work_dir", "runs/a\tb", "'\\t'"),
    ("work_dir", "runs/a b", "' '"),
    ("results_dir", "runs/{variant}", "brace"),
])
def test_output_folders_outside_the_working_directory_or_in_code_are_refused(key, value, problem):
    with pytest.raises(ConfigError, match="allowed: a relative path inside the working") as error:
        checked(**{key: value})
    assert str(error.value).startswith(f"config key '{key}'")
    assert problem in str(error.value)


def test_the_shipped_configurations_pass_the_path_checks():
    for name in ("default", "cpu_full", "paper", "smoke"):
        config = read_config(name)
        check_config(config, local=False, dry_run=True)


def test_ids_with_a_trailing_newline_or_whitespace_are_refused():
    """The schema's `^...$` pattern lets "vanilla\\n" through (re.search); the load check does not."""
    variants = yaml.safe_load(yaml.safe_dump(SMOKE["variants"]))
    variants[0]["id"] = "vanilla\n"
    with pytest.raises(ConfigError, match=r"config key 'variants\[0\]\.id'.*allowed: a letter"):
        checked(variants=variants)
    recall = yaml.safe_load(yaml.safe_dump(SMOKE["recall"]))
    recall["variants"][0]["id"] = "a b"
    with pytest.raises(ConfigError, match=r"config key 'recall\.variants\[0\]\.id'"):
        checked(recall=recall)
    decode = yaml.safe_load(yaml.safe_dump(SMOKE["decode_benchmark"]))
    decode["variants"][0]["id"] = "x;y"
    with pytest.raises(ConfigError, match=r"config key 'decode_benchmark\.variants\[0\]\.id'"):
        checked(decode_benchmark=decode)
    with pytest.raises(ConfigError, match=r"config key 'extra_modules\[0\]'"):
        checked(extra_modules=["os\n"])
