"""The built-in file, search, shell and git tools, in the order the model sees them."""

from __future__ import annotations

from .files import edit_file, list_directory, read_file, write_file
from .git import (
    git_add,
    git_branch,
    git_checkout,
    git_commit,
    git_diff,
    git_log,
    git_pull,
    git_push,
    git_status,
)
from .registry import Tool
from .search import search_files
from .shell import run_shell

__all__ = ["builtin_tools"]


def builtin_tools() -> list[Tool]:
    """A fresh list each call (the Tool objects themselves are shared and read-only by use)."""
    return [
        read_file,
        write_file,
        edit_file,
        list_directory,
        search_files,
        run_shell,
        git_status,
        git_diff,
        git_log,
        git_add,
        git_commit,
        git_push,
        git_pull,
        git_branch,
        git_checkout,
    ]
