"""The documentation cannot drift from the code: every command in the README and docs/ (code
blocks, and commands quoted in the text) names a module or script that exists, and its flags and
sub-commands parse with the program's own argument parser, run without executing anything;
every environment variable in the documentation's tables is one the code reads, and every
BYOC_* and SAGEMAKER_* variable the code reads is documented; every hyperparameter of
train/config.py is in the hyperparameters table, and the table names no other."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import io
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("scripts", "train", "debugger", "tune", "monitor", "bench", "serve", "artifact",
            "util")
SHELL_SCRIPTS = re.compile(r"(\./)?(scripts/[\w-]+\.sh|build_and_push\.sh|docker/[\w-]+\.sh|"
                           r"\.ci/run)$")
CODE_FILES = [p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py")] + [
    *(ROOT / "docker").glob("*.Dockerfile"), *(ROOT / "docker").glob("*.sh"),
    *(ROOT / "scripts").glob("*.sh"), ROOT / "build_and_push.sh", ROOT / ".ci" / "run"]


def code_text() -> str:
    return "\n".join(p.read_text() for p in CODE_FILES)


# Commands as the pages write them.

def fenced_lines(text: str) -> list[str]:
    """The lines of every fenced code block, continuations (a trailing \\) joined."""
    lines, inside, joined = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        joined += line.rstrip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        lines.append(joined)
        joined = ""
    return lines


def quoted_commands(text: str) -> list[str]:
    """Commands quoted in the text as code spans: `python -m ...`, `scripts/....sh ...`."""
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return [span for span in re.findall(r"`([^`\n]+)`", outside)
            if re.match(r"(\.venv/bin/)?python3? -m |\./build_and_push\.sh|docker/build|"
                        r"scripts/\w+\.sh", span)]


def segments(line: str) -> list[list[str]]:
    """The words of each simple command of a shell line (comments, &&, ;, | and leading
    VAR=value assignments taken off); [] for what is not a command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found, current = [], []
    for word in words + [";"]:
        if word in ("&&", ";", "|", "||"):
            while current and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current.pop(0)
            if current and current[0] in ("source", "."):
                current.pop(0)
            if current:
                found.append(current)
            current = []
        else:
            current.append(word)
    return found


@dataclasses.dataclass
class Command:
    page: str
    words: list[str]
    quoted: bool  # from a code span in the text, which may leave out required arguments

    def __str__(self) -> str:
        return f"{self.page}: {' '.join(self.words)}"


def commands(page: str, text: str) -> list[Command]:
    found = [Command(page, words, False) for line in fenced_lines(text)
             for words in segments(line)]
    for span in quoted_commands(text):
        span = re.sub(r"\[[^\]]*\]", "", span)  # [--optional flags] in a synopsis
        found += [Command(page, words, True) for words in segments(span)]
    return found


# Parsing a program's arguments without running it.

class Parsed(Exception):
    def __init__(self, namespace, extras):
        super().__init__()
        self.namespace, self.extras = namespace, extras


@contextlib.contextmanager
def parsing_only():
    """argparse stops the program as soon as its arguments are parsed (Parsed); nested parsing
    (sub-commands) goes on as usual."""
    real_args = argparse.ArgumentParser.parse_args
    real_known = argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_args(self, args=None, namespace=None):
        depth[0] += 1
        try:
            parsed = real_args(self, args, namespace)
        finally:
            depth[0] -= 1
        raise Parsed(parsed, [])

    def parse_known_args(self, args=None, namespace=None):
        if depth[0]:
            return real_known(self, args, namespace)
        depth[0] += 1
        try:
            parsed, extras = real_known(self, args, namespace)
        finally:
            depth[0] -= 1
        raise Parsed(parsed, extras)

    # A page names every flag in full: no abbreviation (argparse would take --endpoint for
    # --endpoint-name, and a renamed flag's old prefix would pass).
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", parse_known_args), \
            mock.patch.object(argparse.ArgumentParser, "_get_option_tuples",
                              lambda self, option_string: []):
        yield


def hyperparameter_problems(names: list[str]) -> list[str]:
    from train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return [f"unknown hyperparameter {name!r}" for name in names
            if name.replace("-", "_") not in fields]


def module_problems(module_name: str, argv: list[str], quoted: bool) -> list[str]:
    """What is wrong with `python -m module_name argv...`, by the module's own parser."""
    if module_name.split(".")[0] not in PACKAGES:
        return []  # another project's module (moto.server, pip): not ours to check
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        return [f"no module {module_name} ({e})"]
    main = getattr(module, "main", None)
    if main is None or "argparse" not in inspect.getsource(module):
        return []  # takes no options (serve.server's one word is checked by its own tests)
    stderr = io.StringIO()
    takes_argv = bool(inspect.signature(main).parameters)
    with parsing_only(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(
            io.StringIO()), mock.patch.object(sys, "argv", [module_name, *argv]):
        try:
            main(argv) if takes_argv else main()
        except Parsed as parsed:
            return parsed_problems(module_name, parsed)
        except SystemExit as e:
            if e.code in (0, None):  # --help
                return []
            message = stderr.getvalue().strip().splitlines()[-1:] or [str(e.code)]
            if quoted and "the following arguments are required" in message[0]:
                return []
            return [message[0]]
    return [f"{module_name} ran past its argument parsing"]


def parsed_problems(module_name: str, parsed: Parsed) -> list[str]:
    """Hyperparameters given to a launch script (--hp) or to train.train (its other flags)."""
    names = [item.partition("=")[0] for item in getattr(parsed.namespace, "hp", []) or []]
    if module_name == "train.train":
        from train.config import pairs_to_dict

        names += list(pairs_to_dict(parsed.extras))
    elif parsed.extras:
        return [f"unrecognized arguments: {' '.join(parsed.extras)}"]
    return hyperparameter_problems(names)


def shell_problems(script: str, argv: list[str]) -> list[str]:
    """A script of the kit's: it exists, and its flags (and image targets) are among the
    choices its own argument loop takes (a `case` label)."""
    path = ROOT / script.removeprefix("./")
    if not path.is_file():
        return [f"no script {script}"]
    labels = set(re.findall(r"^\s*([\w|.-]+)\)", path.read_text(), flags=re.M))
    choices = {choice for label in labels for choice in label.split("|")}
    if not choices or path.name in ("run_tests.sh",):  # its arguments are pytest's
        return []
    return [f"{script} takes no {word}" for word in argv
            if (word.startswith("--") or not word.startswith(("-", "$", "/", "."))
                and not re.search(r"[/:=]", word)) and word not in choices
            and not _is_value(argv, word)]


def _is_value(argv: list[str], word: str) -> bool:
    """A flag's value (--region eu-west-1), not a choice of its own."""
    at = argv.index(word)
    return at > 0 and argv[at - 1].startswith("--") and "=" not in argv[at - 1]


def command_problems(command: Command) -> list[str]:
    words = command.words
    if words[0].endswith("python") or words[0].endswith("python3"):
        if len(words) >= 3 and words[1] == "-m":
            return module_problems(words[2], words[3:], command.quoted)
        return []
    if SHELL_SCRIPTS.match(words[0]):
        return shell_problems(words[0], words[1:])
    return []


def page_problems(page: str, text: str) -> list[str]:
    return [f"{command}: {problem}" for command in commands(page, text)
            for problem in command_problems(command)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_and_flag_is_the_codes(page):
    text = page.read_text()
    assert commands(page.name, text) or page.name in ("design.md", "development.md",
                                                      "benchmarks.md", "rules.md")
    assert page_problems(page.name, text) == []


def test_a_flag_no_parser_knows_fails_the_check():
    """Renamed in a page, a flag is caught: in a code block and quoted in the text."""
    page = (ROOT / "docs" / "aws.md").read_text()
    assert "--endpoint-name dogs" in page
    renamed = page.replace("--endpoint-name dogs", "--endpoint dogs")
    problems = page_problems("aws.md", renamed)
    assert problems and all("unrecognized arguments: --endpoint" in p or "--endpoint" in p
                            for p in problems), problems
    quoted = "Deploy with `python -m scripts.sagemaker_deploy --instance-typ ml.c5.xlarge`."
    assert page_problems("x.md", quoted)
    script = "```bash\n./build_and_push.sh --regoin eu-west-1 train\n```"
    assert page_problems("x.md", script) == [
        "x.md: ./build_and_push.sh --regoin eu-west-1 train: ./build_and_push.sh takes no --regoin"]
    hyperparameter = "```bash\npython -m scripts.sagemaker_train --local --data d --output o --hp epoch=3\n```"
    assert "unknown hyperparameter 'epoch'" in page_problems("x.md", hyperparameter)[0]


# Environment variables.

def table_variables(text: str) -> set[str]:
    """Names in the first column of the tables whose first header is `variable`."""
    names, in_table = set(), False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith(
            "|") else []
        if not cells:
            in_table = False
        elif cells[0] == "variable":
            in_table = True
        elif in_table and re.fullmatch(r"`[A-Z][A-Z0-9_]+`", cells[0]):
            names.add(cells[0].strip("`"))
    return names


def code_variables(text: str) -> set[str]:
    """BYOC_* and SAGEMAKER_* variables the code reads or sets: quoted in Python, $NAME in
    shell, ENV in a Dockerfile."""
    quoted = re.findall(r"[\"']((?:BYOC|SAGEMAKER)_[A-Z0-9_]+)[\"']", text)
    shell = re.findall(r"\$\{?((?:BYOC|SAGEMAKER)_[A-Z0-9_]+)", text)
    docker = re.findall(r"^\s*(?:ENV\s+)?((?:BYOC|SAGEMAKER)_[A-Z0-9_]+)=", text, flags=re.M)
    return set(quoted + shell + docker)


def test_every_variable_in_the_tables_is_read_by_the_code():
    documented = set().union(*(table_variables(p.read_text()) for p in PAGES))
    assert {"BYOC_PRECISION", "SAGEMAKER_BIND_TO_PORT", "BASE_IMAGE"} <= documented
    code = code_text()
    assert sorted(name for name in documented if not re.search(rf"\b{name}\b", code)) == []


def test_every_byoc_and_sagemaker_variable_of_the_code_is_documented():
    read = code_variables(code_text())
    assert {"BYOC_MAX_PIXELS", "SAGEMAKER_ROLE", "SAGEMAKER_MULTI_MODEL"} <= read
    pages = "\n".join(p.read_text() for p in PAGES)
    assert sorted(name for name in read if f"`{name}" not in pages) == []


# Hyperparameters.

def test_the_hyperparameters_table_is_train_configs():
    from train.config import TrainConfig

    text = (ROOT / "docs" / "training.md").read_text()
    table = text[text.index("| hyperparameter |"):]
    table = table[:table.index("\n\n")]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == [f.name for f in dataclasses.fields(TrainConfig)]
