"""The checkout the GPU check runs in: its root (configs/, tests/, setup.py, tools/) and its commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["REPO", "commit_description", "git"]

# mdqe/benchmark/gpu_check/repo.py -> the checkout's root: the check builds, tests and reads configs in place
REPO = Path(__file__).resolve().parents[3]


def git(*args: str) -> str:
    """Output of `git ARGS` in the checkout, stripped; '' where git or the repository is missing."""
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit_description() -> str:
    """HEAD's hash, with " (with uncommitted changes)" when tracked files differ from it; '' without git."""
    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return commit
