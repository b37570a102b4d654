"""``fusion-dspy serve``: run model servers until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from fusion_dspy.cli._models import MODEL_PATH_OPTION


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    embedded: bool = typer.Option(False, "--embedded", help="Serve the embedded CPU model (SmolLM2-135M)."),
    config: Path | None = typer.Option(None, "--config", help="Serving configuration (vLLM / embedded / URL models)."),
    endpoints_out: Path | None = typer.Option(None, "--endpoints-out", help="Write the resolved LiteLLM model_list here."),
    port: int | None = typer.Option(None, "--port", help="Port for --embedded (default: a free one)."),
    model_path: Path | None = MODEL_PATH_OPTION,
    n_ctx: int = typer.Option(
        32768, "--n-ctx", help="Context size for --embedded, shared by the parallel slots (SmolLM2 was trained on 8192 per sequence)."
    ),
    n_parallel: int = typer.Option(4, "--n-parallel", help="Parallel slots for --embedded."),
    n_threads: int | None = typer.Option(None, "--n-threads", help="CPU threads for --embedded."),
) -> None:
    """Serve models until interrupted; print each base URL."""
    if embedded == (config is not None):
        raise typer.BadParameter("give exactly one of --embedded or --config FILE")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if config is not None:
        from fusion_dspy.serving.launch import serve_config

        def on_ready(deployment, endpoints_path) -> None:
            for entry in deployment.model_list:
                params = entry["litellm_params"]
                typer.echo(f"{entry['model_name']}\t{params.get('api_base', '')}\t{params['model']}")
            typer.echo(f"endpoints: {endpoints_path}  (use it with --pool)")
            typer.echo(f"logs: {deployment.log_dir}")

        serve_config(config, endpoints_out=endpoints_out, stop=stop, on_ready=on_ready)
        typer.echo("stopped", err=True)
        return
    from fusion_dspy.serving.embedded import EmbeddedServer

    with EmbeddedServer(model_path, port=port, n_ctx=n_ctx, n_parallel=n_parallel, n_threads=n_threads) as server:
        if endpoints_out is not None:
            import yaml

            from fusion_dspy.lm.endpoints import model_list_of

            endpoints_out.write_text(yaml.safe_dump({"model_list": model_list_of([server.endpoint])}))
        typer.echo(server.api_base, nl=True)
        while not stop.wait(0.5):
            if not server.running:
                typer.echo("error: the embedded server stopped unexpectedly:\n" + server.log_tail(), err=True)
                raise typer.Exit(1)
    typer.echo("stopped", err=True)
