"""``ebm-bench``: the command line (argparse). Imports nothing heavy: each command's
module imports torch / ray / optuna / duckdb inside its handler, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys

from harness.commands import COMMANDS, load_command

DESCRIPTION = """\
Benchmark energy-based models over combinatorial output spaces (label subsets,
permutations): the joint EBM / log-partition method ("min-min") against exact MLE, MCMC,
NCE, perceptron and min-max baselines, on real and synthetic tasks, on Ray.

  ebm-bench run                       # the quick suite on a local Ray instance
  ebm-bench run --suite paper --address auto --gpus-per-run 0.25
  ebm-bench leaderboard --format markdown
  ebm-bench query "select method, avg(test_f1_example) from runs group by 1"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebm-bench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        load_command(name).register(subparsers)
    for command in subparsers.choices.values():  # module docstrings are reStructuredText: show plain text
        command.description = plain_text(command.description)
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def plain_text(text: str | None) -> str | None:
    """reStructuredText inline markup as plain text: ``x`` → x, :func:`x` → x, a trailing :: → :."""
    import re

    if not text:
        return text
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = text.replace("``", "")
    return re.sub(r"::$", ":", text, flags=re.M)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ebm-bench")
    except metadata.PackageNotFoundError:
        return "(source checkout)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    _one_line_warnings()
    if getattr(args, "strict", False):
        from harness import store

        store.set_strict(True)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ebm-bench: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # bad input, unusable dirs: one clear line
        if _debug():
            raise
        print(f"ebm-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _one_line_warnings() -> None:
    """Warnings (a damaged file skipped, ...) as one ``warning: ...`` line on stderr each."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show


def _debug() -> bool:
    import os

    return os.environ.get("EBM_BENCH_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
