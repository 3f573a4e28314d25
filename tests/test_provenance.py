"""Provenance: the commit is marked dirty by code changes, not by a run's own rewritten results."""
import subprocess

from longnet.provenance import git_commit


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_dirty_means_code_changed_not_results(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")  # a run rewrote its committed output
    git_commit.cache_clear()
    assert git_commit(tmp_path) == head
    (tmp_path / "model.py").write_text("x = 2\n")
    git_commit.cache_clear()
    assert git_commit(tmp_path) == head + "-dirty"


def test_outside_git_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
