"""`orchestrator serve`: the HTTP API on Ray Serve (a local Ray, or --address), in the foreground until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from .runtime import ADDRESS, DATA_DIR, DB_URL

console = Console(stderr=True)


def start_api(host: str, port: int, settings: dict, address: str | None = None, replicas: int | None = None,
              num_cpus: int | None = None, app_name: str = "orchestrator") -> str:
    """Connect to Ray, start the orchestrator actor and the API on Serve; returns the API's base URL."""
    from ray import serve

    from orchestrator.runtime.client import connect_ray, find_cluster, get_orchestrator
    from orchestrator.runtime.config import RuntimeConfig
    from serve.app import build_app
    from serve.settings import ApiSettings

    api = ApiSettings.load(settings.pop("config", None), settings)
    connect_ray(find_cluster(address), num_cpus=num_cpus)
    get_orchestrator(RuntimeConfig(db_url=api.db_url, data_dir=api.data_dir))
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    application = build_app(api.model_dump())
    if replicas:
        application = _with_replicas(application, replicas)
    serve.run(application, name=app_name, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def _with_replicas(application, replicas: int):
    """The gateway with `replicas` replicas (the model deployments keep theirs)."""
    from serve.app import ApiGateway

    bound = application._bound_deployment  # the gateway's bind() arguments: settings and the model handles
    return ApiGateway.options(num_replicas=replicas).bind(*bound.init_args, **bound.init_kwargs)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)"),
        port: int = typer.Option(8000, min=1, max=65535),
        config: Path = typer.Option(None, "--config", help="A Serve config whose `api:` section holds the API "
                                                          "settings (e.g. configs/serve.yaml)"),
        address: str = ADDRESS,
        data_dir: Path = DATA_DIR,
        db_url: str = DB_URL,
        redis_url: str = typer.Option(None, "--redis-url", envvar="REDIS_URL",
                                      help="Redis for the rate limit shared by every replica (default: none, "
                                           "each replica counts alone)"),
        replicas: int = typer.Option(None, "--replicas", min=1, help="Gateway replicas"),
        num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)"),
    ):
        """Serve the HTTP API (FastAPI on Ray Serve) under /api/v1, docs at /docs; Ctrl-C stops it."""
        from ray import serve as ray_serve

        settings = {"config": config, "db_url": db_url, "redis_url": redis_url,
                    "data_dir": str(Path(data_dir).resolve()) if data_dir else None}
        url = start_api(host, port, settings, address, replicas, num_cpus)
        console.print(f"[green]API ready[/] at {url}/api/v1 (docs {url}/docs); "
                      "keys: `orchestrator keys create NAME --role viewer|operator|admin`; Ctrl-C stops it")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping the API")
        finally:
            ray_serve.shutdown()
