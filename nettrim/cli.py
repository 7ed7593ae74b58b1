"""Command line: ``nettrim prune``, ``nettrim report``, ``nettrim demo``.

Errors a user can fix (a wrong path, a checkpoint that does not fit the model, a bad
setting) end the command with exit status 2 and one line on stderr that says what to do.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .inputs import UsageError, load_calibration, load_checkpoint, load_factory, reason

__all__ = ["main", "command_help", "synopsis"]

logger = logging.getLogger("nettrim")


class Interrupted(Exception):
    """Ctrl-C during a run, reported as one line that says how to go on."""


# ---------------------------------------------------------------------------- loading
def _solver_options(args) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.tol is not None:
        options["tol"] = args.tol
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    if args.backend is not None:
        options["backend"] = args.backend
    if args.backend == "torch":
        options["device"] = args.device
    return options


def _device(text: str) -> Any:
    """``--device`` as a torch device that this machine has (``UsageError`` otherwise)."""
    from solvers._torch_kernels import resolve_device

    try:
        return resolve_device(text)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{option}: needs a JSON object, got {text!r}")
    return value


def build_config(args, work_dir: Path) -> Any:
    """The :class:`~nettrim.PruneConfig` of a ``nettrim prune`` command line."""
    from .config import PruneConfig

    resumable = _method(args.method).resumable
    try:
        return PruneConfig(
            method=args.method, mode=args.mode, epsilon=args.epsilon, gamma=args.gamma, sparsity=args.sparsity,
            layers=args.layers, solver=args.solver, solver_options=_solver_options(args),
            method_options=_json_object(args.method_options, "--method-options"), refit=args.refit,
            allocate=None if args.allocate == "none" else args.allocate,
            accept_infeasible=args.accept_infeasible, progress=not args.quiet, max_positions=args.max_positions,
            seed=args.seed, work_dir=work_dir if resumable else None, resume=args.resume and resumable,
            executor=args.executor, split=args.split, store=args.store, memory_budget=args.memory_budget,
            store_dir=args.store_dir)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc


def _method(name: str):
    from .registry import get_method

    return get_method(name)


def cmd_prune(args) -> int:
    from .pipeline import prune
    from .workdir import WorkDir
    from .write import atomic_write, report_path

    out = Path(args.out)
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"--out: directory {str(directory)!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--out: directory {str(directory)!r} is not writable")
    work_dir = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
    if args.resume and not WorkDir.holds_run(work_dir):
        raise UsageError(f"--resume: {str(work_dir)!r} holds no interrupted run; pass the --work-dir of that run "
                         "(default: --out with '.work' appended)")
    config = build_config(args, work_dir)
    kwargs = _json_object(args.model_kwargs, "--model-kwargs")
    device = _device(args.device)
    model = load_factory(args.model, kwargs)
    load_checkpoint(args.checkpoint, model)
    model.to(device)
    calib = load_calibration(args.calib)
    resumable = config.method_spec.resumable
    try:
        result = prune(model, calib, config)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt as exc:
        finished = getattr(exc, "finished", 0)
        where = (f"{finished} finished layer(s) kept in {work_dir}; run the same command with --resume to go on"
                 if resumable else f"nothing was kept (--method {args.method} runs in one piece)")
        raise Interrupted(f"interrupted: {where}") from None
    result.save(out)
    if resumable and not args.work_dir:  # the default work directory has served its purpose
        shutil.rmtree(work_dir, ignore_errors=True)
    report = args.report or report_path(out)
    if args.report:
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        atomic_write(report, lambda tmp: Path(tmp).write_text(text))
    print(result.summary())
    print(f"wrote {out} and {report}")
    return 0


def _report_from_tensors(path: str) -> str:
    from .result import _fmt_bytes
    from .storage import stored_nbytes
    from .write import load

    state = load(path)
    lines = [f"{path}: no nettrim report inside; weight tensors found:",
             f"{'tensor':<30} {'shape':>14} {'nonzero':>10} {'kept':>7}"]
    dense = stored = nnz = size = 0
    for name, tensor in state.items():
        if not name.endswith("weight") or tensor.dim() < 2:
            continue
        count = int((tensor != 0).sum())
        lines.append(f"{name:<30} {'x'.join(map(str, tensor.shape)):>14} {count:>10,} {count / tensor.numel():7.1%}")
        nnz, size = nnz + count, size + tensor.numel()
        dense += tensor.numel() * tensor.element_size()
        stored += stored_nbytes(tensor)
    if size:
        lines.append(f"weights kept: {nnz:,} of {size:,} ({nnz / size:.1%}); "
                     f"dense {_fmt_bytes(dense)}, as nettrim stores them {_fmt_bytes(stored)}")
    return "\n".join(lines)


def cmd_report(args) -> int:
    from .result import _fmt_bytes, summary_from_dict
    from .write import read_report

    if not os.path.isfile(args.path):
        raise UsageError(f"no file {args.path!r}")
    try:
        report = read_report(args.path)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{args.path!r}: the nettrim report in its metadata is damaged ({reason(exc)}); "
                         "the weights can still be read with nettrim.load") from exc
    except Exception as exc:
        raise UsageError(f"{args.path!r} is not a safetensors file ({reason(exc)})") from exc
    try:
        text = summary_from_dict(report) if report else _report_from_tensors(args.path)
        text += f"\nfile: {_fmt_bytes(os.path.getsize(args.path))} on disk"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{args.path!r}: its report or tensors cannot be read ({reason(exc)}); "
                         "was it written by nettrim?") from exc
    print(text)
    return 0


def cmd_demo(args) -> int:
    from .demo import format_demo, run_demo

    hidden = tuple(args.hidden)
    if any(size < 1 for size in hidden):
        raise UsageError(f"--hidden: got {list(hidden)}, needs sizes >= 1")
    rows, results = run_demo(epsilon=args.epsilon, hidden=hidden, epochs=args.epochs, seed=args.seed,
                             progress=not args.quiet)
    if args.verbose:
        print(results["nettrim cascade"].summary(), end="\n\n")
    print(format_demo(rows, epsilon=args.epsilon, hidden=hidden))
    return 0


# ---------------------------------------------------------------------------- parser
def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"got {text}, needs a fraction in (0, 1)")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"got {text}, needs a number >= 0")
    return value


def _rows(text: str) -> int | str | None:
    if text in ("auto", "all"):
        return None if text == "all" else text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, needs 'auto', 'all' or a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text}, needs 'auto', 'all' or a positive integer")
    return value


def _add_prune_parser(sub: Any) -> None:
    """The ``nettrim prune`` command's arguments."""
    from solvers import METHODS as SOLVERS

    from .modes import MODES
    from .registry import METHODS

    p = sub.add_parser("prune", help="prune a checkpoint and save the sparse weights with a report")
    p.add_argument("--model", required=True, help="package.module:factory that builds the architecture")
    p.add_argument("--model-kwargs", help="JSON object of keyword arguments for the factory")
    p.add_argument("--checkpoint", required=True, help="state_dict saved with torch.save (read with weights_only=True)")
    p.add_argument("--calib", required=True, help="calibration inputs: .pt (tensor, (x, y) or {'x': ...}), .npz or .npy")
    p.add_argument("--out", required=True, help="output .safetensors file; the JSON report goes beside it")
    p.add_argument("--report", help="JSON report path (default: --out with suffix .json)")
    p.add_argument("--method", default="nettrim", choices=list(METHODS),
                   help="pruning method (default nettrim; " + ", ".join(
                       f"{m.name}: {m.scope} scope{', needs --sparsity' if m.needs_sparsity else ''}"
                       for m in METHODS.values()) + ")")
    p.add_argument("--method-options", help='JSON object of method options, e.g. \'{"refit": true}\'')
    p.add_argument("--allocate", choices=["auto", "error", "none"], default="auto",
                   help="error: --sparsity is one target for the whole network, shared out among the layers by their "
                   "error curves; none: --sparsity of every layer; auto (default): error for nettrim, none for the "
                   "baselines")
    p.add_argument("--refit", choices=["relu"], help="after the method, refit every layer on its support towards the "
                   "original output, inactive entries kept off (the ReLU-aware fit; error-correcting in cascade mode)")
    p.add_argument("--mode", default="cascade", choices=list(MODES))
    target = p.add_mutually_exclusive_group()
    target.add_argument("--epsilon", type=_non_negative, default=0.05, help="relative budget per layer (default 0.05)")
    target.add_argument("--sparsity", type=_fraction, help="fraction of the weights to remove instead (for nettrim one target for the "
                        "network, shared out among the layers; see --allocate)")
    p.add_argument("--gamma", type=float, default=1.1, help="cascade slack >= 1 (default 1.1)")
    p.add_argument("--layers", nargs="+", help="qualified names of the layers to prune (default all)")
    p.add_argument("--max-positions", type=_rows, default="auto",
                   help="rows per layer program: 'auto' (default: a convolution gets max(10000, 16 x its inputs) of "
                        "its output positions, sampled), an integer cap, or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", default="admm", choices=list(SOLVERS))
    p.add_argument("--tol", type=float, help="solver tolerance")
    p.add_argument("--max-iter", type=int, help="solver iteration cap")
    p.add_argument("--backend", choices=["numba", "numpy", "torch"],
                   help="ADMM backend (default numba, on the host); 'torch' iterates on --device")
    p.add_argument("--device", default="cpu",
                   help="where the model runs while its layers are recorded: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--accept-infeasible", action="store_true",
                   help="keep a layer's result even when its solve did not meet the program "
                        "(default: such a layer keeps its original weights)")
    p.add_argument("--executor", help="where the layer solves run: 'processes' (a local pool) or a Dask "
                   "scheduler address 'tcp://host:8786' (default: this process)")
    p.add_argument("--split", choices=["neuron"], help="one budget per neuron; with --executor, each layer's "
                   "neurons are solved in blocks on the workers")
    p.add_argument("--store", choices=["memory", "disk"], default="memory",
                   help="keep the recorded activations in memory (default) or in memory-mapped files")
    p.add_argument("--memory-budget", help="with --store disk: activations kept in memory before the rest goes "
                   "to disk, e.g. 2GiB (default 0)")
    p.add_argument("--store-dir", help="with --store disk: directory of the files (default: a temporary one)")
    p.add_argument("--work-dir", help="directory that keeps every finished layer, so an interrupted run can "
                   "--resume (default: --out with '.work' appended, removed after a successful run)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the finished layers in the work directory (same inputs and settings)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_prune)


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="nettrim", description="Prune trained ReLU networks layer by layer "
                                     "with convex programs (Net-Trim).")
    parser.add_argument("--version", action="version", version=f"nettrim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each layer (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prune_parser(sub)

    p = sub.add_parser("report", help="per-layer table of a pruned .safetensors file")
    p.add_argument("path")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("demo", help="train a digits MLP, prune it with Net-Trim (both modes, and at a "
                                    "sparsity) and the baselines, print the table")
    p.add_argument("--epsilon", type=_non_negative, default=0.08, help="relative budget (default 0.08)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="hidden sizes (default 256 256)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_demo)
    return parser


def command_help(width: int = 100) -> dict[str, str]:
    """The help of ``nettrim`` and of each of its commands, formatted at a fixed ``width``:
    the source of the CLI reference (``docs/cli.md``) and of the README's synopsis, which a
    test keeps equal to it."""
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    texts = {}
    for name, command in [("nettrim", parser), *commands.choices.items()]:
        command.formatter_class = functools.partial(argparse.HelpFormatter, width=width)
        texts[name] = command.format_help().rstrip()
    return texts


def synopsis(width: int = 100) -> str:
    """The usage of ``nettrim`` and of every command (the README's CLI synopsis)."""
    prefix = "usage: "
    lines = []
    for text in command_help(width).values():
        usage = text.split("\n\n", 1)[0].splitlines()
        lines += [usage[0][len(prefix):]] + [line[len(prefix):] for line in usage[1:]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nettrim`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo" and args.epochs < 1:
        parser.error("--epochs: needs an integer >= 1")
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"nettrim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"nettrim {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"nettrim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
