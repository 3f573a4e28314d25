"""Where the pipeline may write, and what may name a job: checked at load, before any job starts.

    check_paths(config)     # called by pipeline_config.check_config right after the schema

results_dir and work_dir become the folders every job writes into (and which the temporary-file
sweep at run start cleans, workflow/rules/common.smk), and ids become file names and wildcards.
Each must be a relative path inside the working directory of the run (the repository root when run
from there), never the working directory itself, a folder above it, or a folder holding the
project's code; and no id or path may hold whitespace or control characters (a newline passes
the schema's `$`-anchored patterns, and ends a shell command). Every value is also quoted where
it reaches a shell (the rules' {x:q}), so these checks are a second line, not the only one.

Refusals are pipeline_config.ConfigError naming the key path and what is allowed.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

# top-level folders of the repository that hold code (or git's and Snakemake's own state)
CODE_FOLDERS = ("workflow", "longnet", "baselines", "analysis", "benchmarks", "tests", "docs",
                "examples", ".git", ".snakemake")
OUTPUT_DIRS = ("results_dir", "work_dir")
# re.fullmatch: unlike the schema's `^...$` (re.search), a trailing newline does not pass
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
ID_ALLOWED = "a letter or digit, then letters, digits, '_' or '-'"


def _error(key, problem, allowed=None):
    from pipeline_config import ConfigError  # workflow/ is on sys.path wherever this runs
    return ConfigError(key, problem, allowed)


def _bad_character(text: str) -> str | None:
    """A description of the first whitespace or control character in `text`, or None."""
    for i, char in enumerate(text):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            return f"character {char!r} at position {i}"
    return None


def check_output_dir(key: str, value) -> None:
    """`value` is a relative path inside the working directory that holds no code."""
    allowed = ("a relative path inside the working directory, such as runs/NAME or results; "
               "no whitespace, control characters, '{' or '}', no '.' or '..' or empty "
               f"components, not under {', '.join(CODE_FOLDERS)}")
    if not isinstance(value, str) or not value:
        raise _error(key, f"must be a non-empty string, not {value!r}", allowed)
    bad = _bad_character(value)
    if bad is None and ("{" in value or "}" in value):
        bad = "a brace (Snakemake reads {...} in a path as a wildcard)"
    if bad is not None:
        raise _error(key, f"{value!r} holds {bad}", allowed)
    if value.startswith(("/", "~", "\\")) or PurePosixPath(value).is_absolute() \
            or re.match(r"[A-Za-z]:", value):
        raise _error(key, f"{value!r} is an absolute path", allowed)
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _error(key, f"{value!r} has an empty, '.' or '..' component (the working "
                     "directory itself, a folder above it, or a doubled or trailing '/')",
                     allowed)
    if parts[0] in CODE_FOLDERS:
        raise _error(key, f"{value!r} is inside {parts[0]}/, which holds the project's code",
                     allowed)


def check_id(key: str, value, pattern=ID, allowed=ID_ALLOWED) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _error(key, f"{value!r} is not a valid name", allowed)


def check_plain_path(key: str, value) -> None:
    """An input path (read by Python, never by a shell): no control characters."""
    if isinstance(value, str):
        for i, char in enumerate(value):
            if unicodedata.category(char) == "Cc":
                raise _error(key, f"{value!r} holds character {char!r} at position {i}",
                             "a path without control characters")


def check_paths(config: dict) -> None:
    """Every output folder, id and module name in `config` (schema-checked already)."""
    for key in OUTPUT_DIRS:
        check_output_dir(key, config.get(key))
    if config["work_dir"] == config["results_dir"]:
        raise _error("work_dir", f"{config['work_dir']!r} is results_dir too: the per-job "
                     "intermediates go to a folder of their own", "a folder other than "
                     "results_dir, such as results/work or runs/NAME/work")
    for i, variant in enumerate(config.get("variants", [])):
        # an entry's id defaults to its name (pipeline_config.check_variants)
        field = "id" if "id" in variant else "name"
        check_id(f"variants[{i}].{field}", variant.get(field))
    for section in ("recall", "decode_benchmark"):
        for i, variant in enumerate((config.get(section) or {}).get("variants", [])):
            if "id" in variant:
                check_id(f"{section}.variants[{i}].id", variant["id"])
    for name in (config.get("decode_benchmark") or {}).get("shapes", {}):
        check_id(f"decode_benchmark.shapes.{name}", name)
    for i, module in enumerate(config.get("extra_modules", [])):
        check_id(f"extra_modules[{i}]", module, MODULE, "an importable module name: a letter "
                 "or '_', then letters, digits, '_' or '.'")
    check_plain_path("site_resources", config.get("site_resources"))
    check_plain_path("data.path", (config.get("data") or {}).get("path"))
