"""Argument parsing of ``bidsreg bids_dir output_dir {train,participant,group} [options]`` into a
:class:`~bidsreg.config.Config`.

The flags follow the BIDS-Apps conventions that fMRIPrep and MRIQC users know (CONVENTIONS.md);
each method's parameters are the options of its configuration class (the method table).
Usage errors exit with 64, an unknown analysis level with 17. ``--recipe PATH`` reads option
values from a TOML file (keys are the long option names, with ``-`` or ``_``; ``true`` for a
flag, a list for several values, a table for ``plugin-args``); options given on the command
line override it.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import tomllib
from pathlib import Path
from typing import NoReturn, Sequence

from .. import __version__
from .. import exit_codes
from ..config import MAX_DEFAULT_THREADS, OUTPUT_RESOLUTIONS, Config, usable_cpus
from ..data import DEFAULT_MODEL
from ..methods.table import TABLE, all_methods, method_configs, method_names, options
from ..nn.train import TrainConfig

__all__ = ["ANALYSIS_LEVELS", "build_parser", "parse_args"]

ANALYSIS_LEVELS = ("train", "participant", "group")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit with the BIDS-Apps codes."""

    context = ""  # prefix of error messages (the recipe being read)

    def error(self, message: str) -> NoReturn:
        """One line (no usage dump: the options are many), with the BIDS-Apps exit code."""
        unknown_level = message.startswith("argument analysis_level: invalid choice")
        code = exit_codes.UNKNOWN_LEVEL if unknown_level else exit_codes.USAGE
        self.exit(code, f"{self.prog}: error: {self.context}{message} ({self.prog} --help lists the options)\n")


def _entity_label(prefix: str, what: str):
    """argparse type of a BIDS label given with or without its ``prefix`` (``sub-``, ``ses-``)."""

    def parse(value: str) -> str:
        label = value[len(prefix):] if value.startswith(prefix) else value
        if not label or not label.isalnum():
            raise argparse.ArgumentTypeError(f"{value!r} is not a {what} label (letters and digits, optional '{prefix}')")
        return label

    return parse


def _methods(value: str) -> list[str]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if names == ["all"]:
        return list(all_methods())
    unknown = sorted(set(names) - set(method_names()))
    if unknown or not names:
        guesses = [difflib.get_close_matches(name, method_names(), n=1) for name in unknown]
        hint = "".join(f"; did you mean {guess[0]}?" for guess in guesses if guess)
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown) or '(none given)'}{hint} "
                                         f"(methods: {', '.join(method_names())} or 'all')")
    return list(dict.fromkeys(names))


def _plugin(value: str) -> str:
    """A Nipype execution plugin by name (``MultiProc``, ``Linear``, ``SLURM``, ``SLURMGraph``, ...)."""
    from nipype.pipeline import plugins

    names = sorted(name[: -len("Plugin")] for name in dir(plugins) if name.endswith("Plugin") and name != "Plugin")
    if value not in names:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (Nipype plugins: {', '.join(names)})")
    return value


def _json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return parsed


def _at_least(minimum: int):
    """argparse type of an integer >= ``minimum``."""

    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return number

    parse.__name__ = "integer"  # argparse's message: "invalid integer value: 'x'"
    return parse


_positive, _non_negative = _at_least(1), _at_least(0)


def _initial_weights(value: str) -> Path:
    """``default`` (the shipped weights) or the path of a checkpoint."""
    return DEFAULT_MODEL if value == "default" else Path(value)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something (not None, False or empty) and the help
    does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.default == {}:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``bidsreg`` argument parser."""
    parser = _Parser(
        prog="bidsreg",
        description="Two-stage unsupervised CNN registration of T1w brains, benchmarked against ANTs (a BIDS-App).",
        formatter_class=_Formatter,
        epilog="exit codes (BIDS-Apps): " + ", ".join(f"{code} {meaning}" for code, meaning in
                                                       exit_codes.MEANINGS.items()),
    )
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="the output folder (a BIDS derivatives dataset)")
    parser.add_argument("analysis_level", choices=ANALYSIS_LEVELS, help="what to run")
    parser.add_argument("--version", action="version", version=f"bidsreg {__version__}")

    bids = parser.add_argument_group("selecting the data")
    bids.add_argument("--participant-label", "--participant_label", nargs="+", type=_entity_label("sub-", "subject"),
                      metavar="LABEL", help="subjects to process, with or without 'sub-' (default: all)")
    bids.add_argument("--session-label", "--session_label", nargs="+", type=_entity_label("ses-", "session"),
                      metavar="LABEL", help="sessions to process (default: all)")
    bids.add_argument("--bids-filter-file", type=Path, metavar="FILE", help="a PyBIDS filter JSON")
    bids.add_argument("--skip-bids-validation", action="store_true", help="do not run the BIDS validator")

    reg = parser.add_argument_group("registration")
    reg.add_argument("--fixed", metavar="SUB_OR_PATH", help="fixed image: a subject of the dataset (sub-01) or a NIfTI path")
    reg.add_argument("--fixed-labels", type=Path, metavar="PATH", help="label map of a --fixed path")
    reg.add_argument("--labels", type=Path, metavar="DERIV_DIR", help="derivatives dataset holding _dseg label maps")
    reg.add_argument("--labels-desc", metavar="DESC", help="desc entity of those label maps")
    reg.add_argument("--masks", type=Path, metavar="DERIV_DIR", help="brain masks for T1w images that are not skull-stripped")
    reg.add_argument("--methods", type=_methods, default=["cnnio"], metavar="LIST",
                     help="comma-separated, or all (every one but "
                          + ", ".join(m.name for m in TABLE.values() if not m.in_all) + "; default: cnnio): " + "; ".join(f"{m.name} ({m.summary})" for m in TABLE.values())
                          + ". At the train level: the networks to train, "
                          + " and/or ".join(m.name for m in TABLE.values() if m.network))
    reg.add_argument("--output-resolution", choices=OUTPUT_RESOLUTIONS, default="compact",
                     help="grid of the deformable transforms written: compact (default: the grid that fits each "
                          "method's field, the network's 2 mm grid for the CNN; float32, compressed, about 20 MB a "
                          "direction) or full (the fixed image's grid, as ANTs writes them: 10 times larger)")
    reg.add_argument("--recipe", type=Path, metavar="PATH", help="TOML file of option values (see workflows/)")

    parameters = parser.add_argument_group("parameters of the methods")
    for option in options():
        if option.type is Path:
            parameters.add_argument(option.flag, type=Path, metavar="PATH", help=option.help)
            continue
        numbers = _non_negative if option.type is int else _positive_float
        default = "" if option.default is None else " (default: " + (
            " ".join(map(str, option.default)) if option.many else str(option.default)) + ")"
        parameters.add_argument(option.flag, nargs="+" if option.many else None, type=numbers,
                                metavar="N" if option.type is int else "X",
                                help=f"{option.help}{default} [{', '.join(option.methods)}]")

    training = parser.add_argument_group("training (train level)")
    training.add_argument("--affine-steps", type=_positive, default=TrainConfig.affine_steps, metavar="N",
                          help="training steps of the global (affine) network")
    training.add_argument("--deformable-steps", type=_positive, default=TrainConfig.deformable_steps, metavar="N",
                          help="training steps of the local (deformable) network")
    training.add_argument("--initial-weights", type=_initial_weights, metavar="default|CKPT",
                          help="start the two-stage network (cnn, cnnio) from these weights instead of random ones: "
                               "default (the shipped weights, trained on synthetic brains) or a bidsreg checkpoint; "
                               "a fine-tuning needs far fewer steps than a training from scratch")

    run = parser.add_argument_group("running")
    run.add_argument("-w", "--work-dir", type=Path, metavar="DIR", help="Nipype working directory, the cache of a rerun (default: output_dir/work)")
    cpus = usable_cpus()
    run.add_argument("--nprocs", type=_positive, default=cpus, metavar="N",
                     help=f"CPU cores: steps run side by side (MultiProc); threads of train (default: {cpus}, the CPUs "
                          "this process may use: its affinity, at most SLURM_CPUS_PER_TASK)")
    run.add_argument("--omp-nthreads", type=_positive, metavar="N",
                     help=f"threads of each registration (default: --nprocs, at most {MAX_DEFAULT_THREADS})")
    run.add_argument("--mem-gb", type=float, metavar="GB", help="memory MultiProc may use (default: 90%% of the machine's)")
    run.add_argument("--plugin", type=_plugin, default="MultiProc", metavar="NAME",
                     help="Nipype execution plugin: MultiProc, Linear, SLURM, SGE, PBS, LSF, ... (any Nipype plugin)")
    run.add_argument("--plugin-args", type=_json_object, default={}, metavar="JSON",
                     help='the plugin\'s arguments, e.g. \'{"sbatch_args": "--time=1:00:00"}\'')
    run.add_argument("--stop-on-first-crash", action="store_true", help="stop the whole run when one step fails")
    run.add_argument("--allow-missing", action="store_true",
                     help="group level: when results the participant runs were asked for are missing, list them and "
                          "compare the methods on the images they share (without it: exit 66 naming them)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device of the networks")
    run.add_argument("--seed", type=int, default=0, help="random seed of training and of ANTs (default: 0)")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: debug)")
    return parser


def _recipe_argv(parser: "_Parser", path: Path) -> list[str]:
    """The options of a TOML recipe as command-line words (keys are long option names)."""
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        parser.exit(exit_codes.INPUT_MISSING, f"bidsreg: error: {path}: recipe not found; give an existing TOML file\n")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        parser.error(f"{path}: not a valid TOML recipe ({error}); fix the file or drop --recipe")
    words = []
    for key, value in values.items():
        option = "--" + key.replace("_", "-")
        if option not in parser._option_string_actions or option in ("--recipe", "--help", "--version"):
            parser.error(f"{path}: unknown option {key!r} in the recipe; use the long option names of bidsreg --help")
        if isinstance(value, bool):
            words += [option] if value else []
        elif isinstance(value, dict):
            words += [option, json.dumps(value)]
        elif isinstance(value, list):
            joined = [",".join(map(str, value))] if option == "--methods" else [str(item) for item in value]
            words += [option, *joined]
        else:
            words += [option, str(value)]
    return words


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Parse the command line (and a ``--recipe``) into a :class:`~bidsreg.config.Config`; exits
    with 64 or 17 on usage errors.

    Paths are made absolute. Refuses an output or work folder that is the BIDS folder or
    inside it (64), and method parameters that make no valid configuration (64).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.recipe is not None:
        words = _recipe_argv(parser, args.recipe)
        parser.context = f"in recipe {args.recipe}: "
        parser.parse_args([str(args.bids_dir), str(args.output_dir), args.analysis_level, *words])
        parser.context = ""
        args = parser.parse_args(words + argv)  # the command line comes last and wins
    values = vars(args)
    for name, value in values.items():
        if isinstance(value, Path):
            values[name] = value.expanduser().resolve()
    bids_dir = args.bids_dir
    for name in ("output_dir", "work_dir"):
        folder = values[name]
        if folder is not None and not _allowed_inside(bids_dir, folder, name == "work_dir"):
            parser.error(f"{name.replace('_', ' ')} {folder} is the BIDS folder or inside it; choose "
                         f"{bids_dir / 'derivatives' / 'bidsreg'} or a folder outside {bids_dir}")
    if args.analysis_level != "group" and not bids_dir.is_dir():
        what = "is not a folder" if bids_dir.exists() else "does not exist"
        parser.exit(exit_codes.INPUT_MISSING, f"{parser.prog}: error: bids_dir {bids_dir} {what}; give the root "
                                              "folder of a BIDS dataset\n")
    if args.fixed_labels is not None and (args.fixed is None or args.fixed.startswith("sub-")):
        parser.error("--fixed-labels goes with a --fixed NIfTI path; a fixed subject's labels come from --labels")
    given = {option.flag: values.pop(_dest(option.flag)) for option in options()}
    try:
        configs = method_configs(given, args.methods)
    except ValueError as error:
        parser.error(f"method parameters: {error}")
    for name in ("participant_label", "session_label", "methods"):
        values[name] = tuple(values[name] or ())
    return Config(method_configs=configs, **values)


def _allowed_inside(bids_dir: Path, folder: Path, deeper: bool) -> bool:
    """Whether ``folder`` may be an output of ``bids_dir``: outside it, or a derivatives dataset
    of its own (``bids_dir/derivatives/<name>``, where BIDS puts derivatives; with ``deeper``,
    also any folder in one, as a work folder)."""
    if folder != bids_dir and bids_dir not in folder.parents:
        return True
    parts = folder.relative_to(bids_dir).parts
    return len(parts) >= 2 and parts[0] == "derivatives" and (deeper or len(parts) == 2)


def _dest(flag: str) -> str:
    """argparse's attribute name of a long option."""
    return flag[2:].replace("-", "_")
