"""Entry point of the ``fusion-dspy`` command.

Each subcommand lives in its own module with a ``register(app)`` function; a module that is missing
(an optional part not installed) is skipped rather than breaking the whole command.
"""

from __future__ import annotations

import importlib
import logging
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402

app = typer.Typer(
    name="fusion-dspy",
    help="Make, not take, the best of N: sample candidates, then fuse (or select) them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_SUBCOMMANDS = ("serve", "demo", "eval", "synth", "analyze", "optimize", "reproduce")


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("LiteLLM", "litellm", "httpx", "dspy"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


for _name in _SUBCOMMANDS:
    try:
        _module = importlib.import_module(f"fusion_dspy.cli.{_name}")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a subcommand is absent
        if exc.name != f"fusion_dspy.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """Run the CLI; library errors become one clear line and exit code 2."""
    from fusion_dspy.errors import FusionError, redact

    try:
        app()
    except FusionError as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
