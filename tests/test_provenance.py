"""Provenance: the commit is marked dirty, with a hash of the changes, by code changes (tracked or
new files), not by a run's own rewritten results."""
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
    edited = git_commit(tmp_path)
    assert edited.startswith(head + "-dirty-") and len(edited) == len(head) + 19
    (tmp_path / "model.py").write_text("x = 3\n")  # another uncommitted tree: another hash
    git_commit.cache_clear()
    assert git_commit(tmp_path) not in (edited, head)
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "my_variant.py").write_text("y = 1\n")  # a new, untracked file is a change too
    git_commit.cache_clear()
    untracked = git_commit(tmp_path)
    assert untracked.startswith(head + "-dirty-") and untracked != edited
    (tmp_path / "my_variant.py").write_text("y = 2\n")
    git_commit.cache_clear()
    assert git_commit(tmp_path) != untracked


def test_outside_git_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
