"""The ``labctl`` command: one group, lazily imported subcommands, one error policy.

Subcommands live in ``labctl/commands/<name>.py`` and are imported only when run,
so ``labctl --help`` does not pay for importing torch or OpenCV.

Error policy (DESIGN §7): known errors print one line ``labctl: error: ...`` and exit
with their code (2 usage/config, 3 device, 4 timeout, 1 other); anything else is a
bug and prints one line too, unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from labctl import __version__
from labctl.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exit_code_for

# name → (module, attribute, one-line help shown by `labctl --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("labctl.commands.demo", "demo", "Calibrate, train, serve, deploy and report on the simulated bench."),
    "calibrate": ("labctl.commands.calibrate", "calibrate", "Measure an SLM's phase and amplitude response."),
    "train": ("labctl.commands.train", "train", "Train a DONN on measured SLM levels."),
    "evaluate": ("labctl.commands.evaluate", "evaluate", "Re-simulate a trained model and report its accuracy."),
    "serve": ("labctl.commands.serve", "serve", "Run the bench server that owns the devices."),
    "deploy": ("labctl.commands.deploy", "deploy", "Put a trained model on the bench and compare with the twin."),
    "compare": ("labctl.commands.compare", "compare", "Write the bench-vs-twin report of a deploy run."),
    "status": ("labctl.commands.status", "status", "Show a bench server's devices, lease and jobs."),
    "devices": ("labctl.commands.devices", "devices", "List monitors, cameras and serial ports found here."),
    "keys": ("labctl.commands.keys", "keys", "Create and list CURVE keys for remote bench access."),
    "experiment": ("labctl.commands.experiment", "experiment", "Run a grid of training methods and compare them."),
    "show": ("labctl.commands.show", "show", "Show a map on one SLM until Ctrl-C."),
    "view": ("labctl.commands.view", "view", "Watch a bench server's camera and SLMs in an OpenCV window."),
    "refine": ("labctl.commands.refine", "refine", "Fit the twin's alignment and camera to probe frames from the bench."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            return _not_yet(name)
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


def _not_yet(name: str) -> click.Command:
    @click.command(name=name, help=COMMANDS[name][2] + " (not available in this version)")
    def missing() -> None:
        raise click.ClickException(f"`labctl {name}` is not available in this version of labctl")

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="labctl")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """labctl: calibrate SLMs, train diffractive networks on measured levels,
    deploy them on the bench and compare with the digital twin.

    Every command runs on the simulated bench with `--bench sim`.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="labctl", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE if isinstance(e, click.UsageError) else EXIT_FAILURE
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("labctl: interrupted", err=True)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        code = exit_code_for(e)
        if debug:
            traceback.print_exc()
        if code is None:
            click.echo(f"labctl: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
            return EXIT_FAILURE
        click.echo(f"labctl: error: {e}", err=True)
        return code
    return EXIT_OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
