"""The ``nst`` command: stylize images and manage presets from a terminal.

Options and their defaults come from ``StyleSettings`` so the CLI can never
drift from the engine.  Every error ends in one line on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from nst_core import presets
from nst_core.images import ImageError, open_image, save_image
from nst_core.settings import Quality, SettingsError, StyleSettings

_DEFAULTS = {f.name: f.default for f in fields(StyleSettings)}
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool its reader left


class CLIError(Exception):
    """A problem to report in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistyped command line gets one line, as every other mistake does
    (argparse prints its whole usage block first).  Exit code 2, argparse's and the shell's
    convention for a usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nst", description="Paint photos in the style of famous paintings.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "stylize",
        help="paint one photo",
        description="Paint CONTENT in the style of one or more "
        "paintings (your own files with --style, or presets with --preset).",
    )
    s.add_argument("content", type=Path, help="the photo")
    s.add_argument("--style", type=Path, nargs="+", default=[], metavar="FILE", help="style image file(s)")
    s.add_argument("--preset", nargs="+", default=[], metavar="SLUG", help="preset painting(s); see `nst presets list`")
    s.add_argument(
        "--style-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="blend weights, one per style, in the order --style then --preset",
    )
    s.add_argument(
        "--strength",
        type=int,
        default=_DEFAULTS["strength"],
        help="1 (mostly photo) … 10 (mostly painting); default %(default)s",
    )
    s.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="PX",
        help="long side of the output in pixels (default: depends on the device)",
    )
    s.add_argument(
        "--quality",
        choices=[q.value for q in Quality],
        default=_DEFAULTS["quality"].value,
        help="how long to optimise; default %(default)s",
    )
    s.add_argument("--preserve-colors", action="store_true", help="keep the photo's colours (luminance-only transfer)")
    s.add_argument(
        "--style-scale",
        type=float,
        default=_DEFAULTS["style_scale"],
        help="size of the painting's brush strokes relative to the photo; default %(default)s",
    )
    s.add_argument("--tv-weight", type=float, default=_DEFAULTS["tv_weight"], help="smoothness; default %(default)s")
    s.add_argument("--optimizer", choices=["lbfgs", "adam"], default=_DEFAULTS["optimizer"].value)
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    s.add_argument(
        "--seed",
        type=int,
        default=_DEFAULTS["seed"],
        help="another variant: starts from the photo plus noise drawn from N; 0 (default) adds none",
    )
    s.add_argument("-o", "--output", type=Path, required=True, help="output file (.jpg, .png or .webp)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("presets", help="list or fetch the preset paintings")
    psub = p.add_subparsers(dest="presets_command", required=True)
    psub.add_parser("list", help="show the presets as a table")
    f = psub.add_parser("fetch", help="download presets into the cache (verifying their sha256)")
    f.add_argument("slugs", nargs="*", metavar="SLUG")
    f.add_argument("--all", action="store_true", help="fetch every preset")
    return parser


#: tqdm's own rate and time left are left out: they would count steps, and ours counts work.
BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {elapsed}{postfix}"


def _stylize(args: argparse.Namespace) -> int:
    if not args.style and not args.preset:
        raise CLIError("give a style: --style FILE or --preset SLUG (see `nst presets list`)")
    if args.output.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
        raise CLIError(f"output must end in .jpg, .jpeg, .png or .webp, not {args.output.name!r}")
    _check_output(args.output, [args.content, *args.style])
    settings = StyleSettings(
        strength=args.strength,
        size=args.size,
        quality=args.quality,
        preserve_colors=args.preserve_colors,
        style_weights=tuple(args.style_weights) if args.style_weights else None,
        style_scale=args.style_scale,
        seed=args.seed,
        optimizer=args.optimizer,
        tv_weight=args.tv_weight,
    )
    content = open_image(args.content, what="photo")
    styles = [open_image(path, what="style image") for path in args.style]
    styles += [presets.load_preset_image(slug) for slug in args.preset]
    settings.blend_weights(len(styles))  # validate the count before the long part

    # torch and the engine take seconds to import: every mistake above is reported before that.
    from tqdm import tqdm

    from nst_core.device import default_size, describe_device, pick_device
    from nst_core.runner import measure_step_cost
    from nst_core.schedule import blend_eta, plan_at
    from nst_core.transfer import StylizeError, StylizeProgress, stylize

    try:
        device = pick_device(args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None

    bar = None
    started = time.monotonic()
    predicted = None
    if not args.quiet:
        # About a second (four steps at 128 px) that makes the ETA right from the first step
        # (see schedule.blend_eta); the bar fills by work done, not by steps, which differ 16x in cost.
        predicted = measure_step_cost(device).seconds(plan_at(content.size, settings, default_size(device)))

    # A terminal gets a live bar; a log file or pipe a plain line every 10 % of the work,
    # instead of hundreds of carriage-return updates.
    interactive = sys.stderr.isatty()
    lines_written = 0

    def on_step(p: StylizeProgress) -> None:
        nonlocal bar, lines_written
        if args.quiet:
            return
        where = f"scale {p.scale}/{p.scales} {p.width}x{p.height}"
        eta = blend_eta(predicted, p.elapsed, p.fraction, p.eta)
        left = f"{eta:.0f} s left" if eta is not None else "? s left"
        details = f"step {p.step}/{p.total_steps}, loss {p.loss:.4g}, {left}"
        if not interactive:
            if p.fraction * 10 >= lines_written or p.step == p.total_steps:
                print(f"{where}: {100 * p.fraction:3.0f}%, {p.elapsed:.0f} s, {details}", file=sys.stderr, flush=True)
                lines_written = int(p.fraction * 10) + 1
            return
        if bar is None:
            bar = tqdm(total=100, dynamic_ncols=True, file=sys.stderr, bar_format=BAR_FORMAT)
        bar.set_description(where)
        bar.set_postfix_str(details, refresh=False)
        bar.update(100 * p.fraction - bar.n)

    try:
        result = stylize(content, styles, settings, device=device, progress=on_step)
    except StylizeError as exc:
        raise CLIError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    save_image(result, args.output)
    # The description names the precision the engine chose (bfloat16 or not): it explains the time.
    seconds = time.monotonic() - started
    print(f"saved {args.output} ({result.width}x{result.height}) in {seconds:.1f} s on {describe_device(device)}")
    return 0


def _cut(text: str, width: int) -> str:
    """``text`` in ``width`` characters, with an ellipsis that says something was cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that would fail or destroy an input, before minutes of painting."""
    folder = output.parent
    if not folder.exists():
        raise CLIError(f"output folder {folder} does not exist")
    if output.is_dir():
        raise CLIError(f"output {output} is a folder; give a file name, e.g. {output / 'painted.jpg'}")
    if any(output.exists() and path.exists() and output.samefile(path) for path in inputs):
        raise CLIError(f"output {output} is one of the input files; give another name so the original is kept")
    if not os.access(folder, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise CLIError(f"cannot write {output} (permission denied or a read-only folder)")


def _presets(args: argparse.Namespace) -> int:
    if args.presets_command == "list":
        rows = [
            (p.slug, p.title, p.artist, p.year, "cached" if presets.is_cached(p.slug) else "-")
            for p in presets.catalog().values()
        ]
        header = ("slug", "title", "artist", "year", "cache")
        widths = [min(48, max(len(str(r[i])) for r in [header, *rows])) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(_cut(str(v), w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        print(f"\ncache: {presets.cache_dir()}")
        return 0
    slugs = list(presets.catalog()) if args.all else args.slugs
    if not slugs:
        raise CLIError("name presets to fetch, or use --all (see `nst presets list`)")
    for slug in slugs:
        path = presets.fetch(slug)
        print(f"{slug}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        code = _stylize(args) if args.command == "stylize" else _presets(args)
        sys.stdout.flush()  # a reader that left shows up here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        # `nst presets list | head` closed the pipe: stop quietly, as other Unix tools
        # do.  stdout goes to /dev/null so that Python's own flush at exit stays silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("nst: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (CLIError, ImageError, SettingsError, presets.PresetError) as exc:
        print(f"nst: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the promise is one line, even for the unexpected
        from nst_core.vgg import WeightsError

        if isinstance(exc, WeightsError):
            print(f"nst: error: {exc}", file=sys.stderr)
        else:
            print(f"nst: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
