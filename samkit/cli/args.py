"""Argument parsing shared by the commands: the parser class, one-line errors and warnings, prompt values.

Light on purpose (argparse and :mod:`samkit.errors` only): ``samkit --help`` imports this and nothing heavy.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEVICES = ("cpu", "cuda", "mps")
# options whose values may start with '-' (a negative coordinate): argparse would take "-5,10" for an option
NUMERIC_OPTIONS = ("--point", "--box")
_NUMBER_LIST = re.compile(r"^-[\d.]")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, unless it has none (None, False, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or default == argparse.SUPPRESS \
                or "default" in (action.help or "") or not action.option_strings:
            return action.help
        shown = f"{default:.4g}" if isinstance(default, float) else str(default).replace("%", "%%")
        return f"{action.help} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one ``samkit: error:`` line (exit status 2); defaults shown in help."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"samkit: error: {message} (see '{self.prog} --help')\n")


def fail(message: str) -> int:
    """Print ``samkit: error: <message>`` on one line to stderr; return the error exit status."""
    print(f"samkit: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


def warn(message: str) -> None:
    """Print ``samkit: warning: <message>`` on one line to stderr."""
    print(f"samkit: warning: {' '.join(message.split())}", file=sys.stderr)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: one ``samkit: warning:`` line, no source path."""
    warn(str(message))


def install_warning_printer() -> None:
    """Route Python warnings to :func:`show_warning` (call inside ``warnings.catch_warnings()``)."""
    warnings.showwarning = show_warning


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--point -5,10`` -> ``--point=-5,10`` (and the same for the other :data:`NUMERIC_OPTIONS`), so that a
    negative first coordinate is read as a value, not as an unknown option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in NUMERIC_OPTIONS and _NUMBER_LIST.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


# ------------------------------------------------------------------------------------------- options


def add_model_options(p: argparse.ArgumentParser, default_model: str) -> None:
    """--model, --checkpoint, --max-pixels, --device, --threads."""
    p.add_argument("--model", metavar="NAME",
                   help=f"registry model (see 'samkit models'; default {default_model}); with --checkpoint, "
                        "the architecture to load PATH into")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (or EVF-SAM checkpoint directory); alone, its architecture is read from "
                        "the file's metadata or recognised from its contents")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images larger than N pixels (default: $SAMKIT_MAX_IMAGE_PIXELS or 200 million)")
    add_runtime_options(p)


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--device, --threads, --runtime and --precision."""
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for torch (default: torch's choice, every available core)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: run the model's ONNX export (made once into the cache dir; --model may also "
                        "be a `samkit export onnx` folder; needs samkit[onnx])")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: the dynamically quantised ONNX graphs (with --runtime onnxruntime)")


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier run in --out (without it, such a folder is refused)")


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected an integer >= {least}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


# ------------------------------------------------------------------------------------------ prompts


def _numbers(text: str, counts: tuple[int, ...], form: str) -> list[float]:
    """Comma-separated finite numbers; an argparse type error naming ``text`` otherwise."""
    parts = [s.strip() for s in text.split(",")]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected {form}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"bad value {text!r}: coordinates must be finite numbers")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` -> (x, y, label); LABEL is 1 (foreground, default) or 0 (background)."""
    values = _numbers(text, (2, 3), "X,Y or X,Y,LABEL (numbers; LABEL 1 = foreground, 0 = background)")
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: label must be 1 (foreground) or 0 (background), got {label:g}")
    return values[0], values[1], int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` -> (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1."""
    x0, y0, x1, y1 = _numbers(text, (4,), "X0,Y0,X1,Y1 (four numbers: top-left and bottom-right corners)")
    if x1 < x0 or y1 < y0:
        axis = "x1 < x0" if x1 < x0 else "y1 < y0"
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: {axis}; expected X0,Y0,X1,Y1 (top-left, bottom-right)")
    return x0, y0, x1, y1
