"""The argument parser of ``kldiv Y_TRUE Y_PRED``: one option per library option, plus output options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from ..core.reductions import ALL_REDUCTIONS

REDUCTIONS = tuple(name for name in ALL_REDUCTIONS if name is not None)
FORMATS = ("probs", "log_probs", "logits")
DTYPES = ("float32", "float64", "float16")

DESCRIPTION = """\
Compute the Kullback-Leibler divergence KL(y_true || y_pred) = sum(y_true * log(y_true / y_pred))
along an axis, with the exact tf.keras.losses.KLDivergence contract: print the per-sample values
(kldiv.kl_divergence), then the weighted, reduced value (kldiv.KLDivergence)."""

EPILOG = """\
examples:
  kldiv '[[0, 1], [0, 0]]' '[[0.6, 0.4], [0.4, 0.6]]'
      the Keras documentation's example; ends with "auto (sum_over_batch_size): 0.458143"
  kldiv '[[0, 1], [0, 0]]' '[[0.6, 0.4], [0.4, 0.6]]' --sample-weight '[0.8, 0.2]'   # 0.366515
  kldiv '[[0, 1], [0, 0]]' '[[0.6, 0.4], [0.4, 0.6]]' --reduction sum                 # 0.916289
  kldiv '[.4, .9, .2]' '[.5, .8, .12]'                                                # 0.118912
  kldiv y_true.npy y_pred.npy --reduction sum --epsilon 0
  kldiv teacher.csv student.csv --y-true-format logits --from-logits --json
  kldiv targets.json predictions.json --reduction none --sample-weight weights.npy
  kldiv counts_a.csv counts_b.csv --normalize            # two histograms, np.savetxt(v) columns

inputs:
  Y_TRUE, Y_PRED and --sample-weight are each an inline value or a file:
    inline  a number or a nested list of numbers, JSON or Python spelling ('[.4, .9, .2]', nan,
            inf); parsed as data, never evaluated. Converted as the library converts Python
            lists: Python floats become float32.
    .npy    one array, loaded without pickles (allow_pickle=False); it keeps its dtype.
    .csv    comma-separated numeric rows, one sample per row; read as float64. A file of one
            column (a column vector, what np.savetxt(v) writes for a vector v) is ONE
            distribution, not one per row; a sample weight file may be one row or one column.
    .json   a nested list of numbers; converted like an inline value.
  An integer or boolean Y_PRED (inline or from a file) is converted to floating point first
  (float32; the library requires a floating y_pred) unless --dtype is given.
  --normalize divides each distribution of Y_TRUE and Y_PRED (along --axis) by its sum, turning
  histograms of counts into distributions (without it, counts are clipped to [epsilon, 1] as Keras
  does); an entry that is negative or not finite, or a distribution that sums to 0, is an error.

output:
  A table of the unweighted per-sample divergence, then "<reduction>: <value>" (a nested list for
  --reduction none). --json prints one JSON object instead: {"per_sample": ..., "reduction": ...,
  "value": ..., "options": {...}, "dtype": ...} with full-precision values (non-finite values as
  NaN / Infinity, as Python's json module writes them); --precision does not apply to it.

benchmarks:
  kldiv bench [options]               KL of softmax rows: kldiv vs NumPy, SciPy, PyTorch, JAX, ...
  kldiv bench fused-linear [options]  fused linear + KL/JSD vs the naive PyTorch path: peak memory,
                                      time, --accuracy vs float64, --device cuda (+ Liger-Kernel)

exit status:
  0 on success; 2 on any error, reported on one line of stderr as "kldiv: error: <message>"."""


class UsageError(ValueError):
    """A command-line usage error (argparse's own message), reported like every other error."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised, so that every error is one line and exit 2."""

    def __init__(self, prog: str, description: str, epilog: str) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'kldiv --help')")


def _precision(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; received {text!r}")
    return value


def build_parser() -> Parser:
    """The parser of the default command ``kldiv Y_TRUE Y_PRED [options]``."""
    parser = Parser("kldiv", DESCRIPTION, EPILOG)
    parser.add_argument("y_true", metavar="Y_TRUE", help="target distribution: inline value or file")
    parser.add_argument("y_pred", metavar="Y_PRED", help="predicted distribution: inline value or file")
    _add_library_options(parser)
    _add_input_options(parser)
    _add_output_options(parser)
    parser.add_argument("--version", action="version", version=f"kldiv {__version__}")
    return parser


def _add_choice(
    group: Any, flag: str, choices: Sequence[str], default: str, what: str, metavar: str = "NAME"
) -> None:
    """An option taking one of ``choices``, listed in its help with the default."""
    help_text = f"{what}: {', '.join(choices)} (default: {default})"
    group.add_argument(flag, default=default, choices=choices, metavar=metavar, help=help_text)


def _add_library_options(parser: Parser) -> None:
    library = parser.add_argument_group("library options (as kldiv.KLDivergence)")
    _add_choice(library, "--reduction", REDUCTIONS, "auto", "reduction of the weighted loss")
    library.add_argument(
        "--sample-weight", metavar="VALUE_OR_FILE", help="Keras sample_weight: inline value or file"
    )
    for name in ("y-true", "y-pred"):
        what = f"how {name.upper().replace('-', '_')} is given"
        _add_choice(library, f"--{name}-format", FORMATS, "probs", what, metavar="FORMAT")
    library.add_argument(
        "--from-logits", action="store_true", help="shorthand for --y-pred-format logits (Keras)"
    )
    library.add_argument(
        "--epsilon",
        type=float,
        default=None,
        metavar="FLOAT",
        help="clip probabilities to [FLOAT, 1]; 0 = exact mode (default: 1e-7, as Keras, when both "
        "inputs are probabilities, else exact mode)",
    )
    library.add_argument(
        "--axis", type=int, default=-1, metavar="INT", help="distribution axis (default: -1)"
    )
    library.add_argument(
        "--dtype",
        choices=DTYPES,
        metavar="DTYPE",
        help=f"cast both inputs to {', '.join(DTYPES)} (default: keep Y_PRED's dtype)",
    )


def _add_input_options(parser: Parser) -> None:
    group = parser.add_argument_group("input options")
    group.add_argument(
        "--normalize",
        action="store_true",
        help="divide each distribution (row) of Y_TRUE and Y_PRED by its sum: counts -> probabilities",
    )


def _add_output_options(parser: Parser) -> None:
    output = parser.add_argument_group("output options")
    output.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    output.add_argument(
        "--precision",
        type=_precision,
        default=6,
        metavar="N",
        help="significant digits in the table (default: 6)",
    )
