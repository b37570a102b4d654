"""``fusion-dspy serve``: run model servers, or the fusion endpoint over them, until SIGINT/SIGTERM."""

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
    fusion: bool = typer.Option(False, "--fusion", help="Serve the OpenAI-compatible fusion endpoint (models fusion-N, best-of-n-N, "
                                "and each pool member) over --pool, or over the embedded model. See docs/endpoint.md."),
    pool: Path | None = typer.Option(None, "--pool", help="For --fusion: a LiteLLM model_list YAML with a fusion_dspy roles section."),
    endpoints_out: Path | None = typer.Option(None, "--endpoints-out", help="Write the resolved LiteLLM model_list here."),
    port: int | None = typer.Option(None, "--port", help="Port for --embedded (default: a free one) or --fusion (default: 8000)."),
    host: str = typer.Option("127.0.0.1", "--host", help="For --fusion: the interface to listen on."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="FUSION_DSPY_API_KEY", show_envvar=True,
                                       help="For --fusion: clients must send 'Authorization: Bearer KEY' (or os.environ/NAME)."),
    n: int | None = typer.Option(None, "--n", help="For --fusion: candidates of the models fusion and best-of-n without -N "
                                 "(default: the library's N, 5 as in the paper)."),
    max_n: int = typer.Option(16, "--max-n", help="For --fusion: the largest N a request may ask for."),
    max_in_flight: int = typer.Option(4, "--max-in-flight", help="For --fusion: answers computed at once; more wait in the queue."),
    max_queue: int = typer.Option(16, "--max-queue", help="For --fusion: requests that may wait; beyond, 429 with Retry-After."),
    queue_timeout: float = typer.Option(30.0, "--queue-timeout", help="For --fusion: seconds a request waits for a slot, then 429."),
    timeout: float = typer.Option(600.0, "--timeout", help="For --fusion: seconds one answer may take (504 after)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="For --fusion: the candidates' max_tokens when a request sets none."),
    fusor_temperature: float = typer.Option(0.0, "--fusor-temperature", help="For --fusion: the fusor's temperature when a request sets none."),
    model_path: Path | None = MODEL_PATH_OPTION,
    n_ctx: int = typer.Option(
        32768, "--n-ctx", help="Context size for --embedded, shared by the parallel slots (SmolLM2 was trained on 8192 per sequence)."
    ),
    n_parallel: int = typer.Option(4, "--n-parallel", help="Parallel slots for --embedded."),
    n_threads: int | None = typer.Option(None, "--n-threads", help="CPU threads for --embedded."),
) -> None:
    """Serve models (or the fusion endpoint) until interrupted; print each base URL."""
    if embedded + (config is not None) + fusion != 1:
        raise typer.BadParameter("give exactly one of --embedded, --config FILE or --fusion")
    if pool is not None and not fusion:
        raise typer.BadParameter("--pool goes with --fusion (to serve models from a file, use --config)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if fusion:
        from fusion_dspy.cli._fusion import serve_fusion

        serve_fusion(pool_file=pool, host=host, port=port, api_key=api_key, n=n, max_n=max_n, max_in_flight=max_in_flight,
                     max_queue=max_queue, queue_timeout=queue_timeout, timeout=timeout, max_tokens=max_tokens,
                     fusor_temperature=fusor_temperature, stop=stop,
                     embedded={"model_path": model_path, "n_ctx": n_ctx, "n_parallel": n_parallel, "n_threads": n_threads})
        return
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
