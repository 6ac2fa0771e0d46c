"""The ``samkit`` command line; ``samkit COMMAND --help`` describes each command.

=====================  ==========================  ==================================================
command                module                      what
=====================  ==========================  ==================================================
segment, embed         :mod:`samkit.cli.segment`   masks from prompts (an image, or a folder with
                                                   ``--prompts``); an image embedding to prompt later
everything             :mod:`samkit.cli.everything` every object of an image or a folder
eval                   :mod:`samkit.cli.evaluate`  benchmarks (interactive, single-point, boxes, ...)
train, train-text,    :mod:`samkit.cli.train`     training from a config file; calibrating a model
train-refiner,                                     to ship
calibrate
models, demo           :mod:`samkit.cli.models`    the registry and cache; a demo run
export                 :mod:`samkit.cli.export`    ONNX graphs of a model (``export onnx``)
serve                  :mod:`samkit.cli.serve`     the annotation server (``samkit[server]``)
engine                 :mod:`samkit.cli.engine`    the data engine's tools on a served project
                                                   (``engine stats``)
=====================  ==========================  ==================================================

A command module has ``add_parser(subparsers, name, help)``, which adds the command's parser and sets its
handler (``func``, returning the exit status). It is imported only when its command runs, so ``samkit
--help`` and ``--version`` import no torch. A new command is a module with ``add_parser`` and an entry
in :data:`COMMANDS`. Errors print ``samkit: error: <one line>`` on stderr and exit with code 2, leaving
no partial output; warnings print ``samkit: warning: <one line>``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NamedTuple

from samkit import __version__
from samkit.cli.args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Parser,
    fail,
    install_warning_printer,
    join_negative_values,
)
from samkit.errors import SamkitError


class Command(NamedTuple):
    """Where a command lives (its module has ``add_parser``) and its one-line help."""

    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "segment": Command("samkit.cli.segment",
                       "segment an image (or a folder, with --prompts FILE) from point / box / mask / text prompts"),
    "embed": Command("samkit.cli.segment", "compute an image embedding once, to prompt it later"),
    "everything": Command("samkit.cli.everything", "segment everything in an image or a folder of images"),
    "eval": Command("samkit.cli.evaluate", "run a benchmark: interactive, single-point, boxes, edges, refer"),
    "train": Command("samkit.cli.train", "train or fine-tune a model from a config file (JSON)"),
    "train-text": Command("samkit.cli.train",
                          "train a text prompter on a frozen SAM (samkit_tiny_text; config file, JSON)"),
    "train-refiner": Command("samkit.cli.train",
                             "train a SAM-REF refiner behind a frozen SAM (samkit_tiny_ref; config file, JSON)"),
    "calibrate": Command("samkit.cli.train",
                         "calibrate a model's IoU head and everything thresholds on validation data"),
    "models": Command("samkit.cli.models", "list the known models and which checkpoints are cached"),
    "demo": Command("samkit.cli.models", "segment a sample image with a locally available model"),
    "export": Command("samkit.cli.export", "export a model to ONNX: encoder and prompt decoder graphs (+ int8)"),
    "serve": Command("samkit.cli.serve", "run the annotation server (data engine HTTP API; samkit[server])"),
    "engine": Command("samkit.cli.engine", "data engine tools on a served project: stats (samkit[server])"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command is listed, and ``command`` (when given) gets its full parser."""
    parser = Parser(prog="samkit", description="Promptable image segmentation with Segment Anything models.",
                    epilog="'samkit COMMAND --help' describes a command and its options.")
    parser.add_argument("--version", action="version", version=f"samkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, spec in COMMANDS.items():
        if name == command:
            # The one function-level import of the CLI, on purpose: a command's module (and torch with it)
            # is imported only when that command runs, so `samkit --help` / `--version` start at once.
            importlib.import_module(spec.module).add_parser(commands, name, spec.help)
        else:
            commands.add_parser(name, help=spec.help, add_help=False)  # listed in --help, never run
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some images failed, 2 bad input or usage, 130 interrupted)."""
    args_in = join_negative_values(sys.argv[1:] if argv is None else [str(a) for a in argv])
    command = next((a for a in args_in if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    try:
        args = parser.parse_args(args_in)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    with warnings.catch_warnings():
        install_warning_printer()
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Call the command's handler, turning bad input into one ``samkit: error:`` line (exit 2)."""
    try:
        return args.func(args)
    except SamkitError as exc:
        return fail(str(exc))
    except BrokenPipeError:  # stdout closed early (`samkit models | head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.filename is None:  # not about a user path: a bug or system failure, keep the traceback
            raise
        return fail(f"{exc.strerror or exc}: {exc.filename}")
    except KeyboardInterrupt:
        print("samkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
