"""`qv serve` (the Market Data API) and `qv auth` (its clients and tenants)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, errors_to_exit, fail, session, settings
from quantivista.cli.render import Format

__all__ = ["auth_app", "serve"]

auth_app = typer.Typer(help="API clients and tenants.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port, 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Serve the Market Data API (REST /api/v1, /docs, /healthz, /readyz, /metrics)."""
    import uvicorn

    base = settings()
    update = {
        k: v
        for k, v in {
            "host": host, "port": port, "workers": workers, "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
        }.items()
        if v is not None
    }  # fmt: skip
    if (update.get("ssl_certfile") is None) != (update.get("ssl_keyfile") is None):
        fail("--ssl-certfile and --ssl-keyfile go together", code=2)
    with errors_to_exit():
        config = base.model_copy(update={"api": base.api.model_copy(update=update)})
    api = config.api
    # workers are new processes: they read the settings from the environment
    os.environ["QV_DATA_DIR"] = str(config.data_dir)
    for key, value in (("HOST", api.host), ("PORT", api.port)):
        os.environ[f"QV_API__{key}"] = str(value)
    scheme = "https" if api.ssl_certfile else "http"
    console.print(
        f"[bold]QuantiVista API[/] on {scheme}://{api.host}:{api.port}  (docs: /docs)  "
        f"store: {escape(str(config.data_dir))}"
    )
    uvicorn.run(
        "quantivista.api.server:create",
        factory=True,
        host=api.host,
        port=api.port,
        workers=api.workers,
        log_level=config.log_level.lower(),
        ssl_certfile=str(api.ssl_certfile) if api.ssl_certfile else None,
        ssl_keyfile=str(api.ssl_keyfile) if api.ssl_keyfile else None,
        timeout_graceful_shutdown=10,
    )


@auth_app.command("create-client")
def create_client(
    tenant: Annotated[str, typer.Option(help="The client's tenant.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: read:bars,read:reference,write:ingest,admin.")
    ] = "read:bars,read:reference",
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Create an API client; its secret is shown once."""
    with session(create=True) as rt:
        issued = rt.auth.create_client(tenant, scopes.split(","), name=name)
        rt.audit.record("auth.create_client", issued.client_id, details={"tenant": tenant})
    if fmt_ is Format.json:
        document = {"client_id": issued.client_id, "client_secret": issued.client_secret,
                    "api_key": issued.api_key, "tenant": issued.tenant,
                    "scopes": issued.scopes}  # fmt: skip
        sys.stdout.write(json.dumps(document) + "\n")
        return
    console.print(f"client_id     {issued.client_id}")
    console.print(f"client_secret {issued.client_secret}")
    console.print(f"api_key       {issued.api_key}")
    console.print(f"tenant {escape(issued.tenant)}, scopes {', '.join(issued.scopes)}")
    console.print("[dim]the secret is not stored: keep it now[/]")


@auth_app.command("revoke")
def revoke(client_id: Annotated[str, typer.Argument(help="The client to revoke.")]) -> None:
    """Revoke a client: its API key and every token issued to it stop working."""
    with session() as rt:
        rt.auth.revoke(client_id)
        rt.audit.record("auth.revoke", client_id)
    console.print(f"revoked {escape(client_id)}")


@auth_app.command("clients")
def clients(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None) -> None:
    """List API clients (never their secrets)."""
    with session() as rt:
        listed = rt.auth.clients.clients(tenant)
    table = Table(title="API clients", header_style="bold")
    for col in ("client_id", "tenant", "scopes", "name", "created", "revoked"):
        table.add_column(col)
    for c in listed:
        table.add_row(
            c.client_id, escape(c.tenant), ",".join(c.scopes), escape(c.name),
            f"{c.created_at:%Y-%m-%d %H:%M}",
            f"{c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "",
        )  # fmt: skip
    console.print(table)


@auth_app.command("tenant")
def tenant(
    name: Annotated[str, typer.Argument(help="The tenant.")],
    symbols: Annotated[
        str | None, typer.Option(help="Entitled symbol patterns, comma-separated (BRK.*).")
    ] = None,
    timeframes: Annotated[str | None, typer.Option(help="Entitled timeframes (1d,1m).")] = None,
    datasets: Annotated[
        str | None, typer.Option(help="Entitled datasets (bars,actions,instruments).")
    ] = None,
) -> None:
    """Set a tenant's entitlements (an option left out: unrestricted)."""

    def split(text: str | None) -> list[str] | None:
        return [s.strip() for s in text.split(",") if s.strip()] if text is not None else None

    with session(create=True) as rt:
        saved = rt.auth.set_tenant(
            name, symbols=split(symbols), timeframes=split(timeframes), datasets=split(datasets)
        )
        rt.audit.record("auth.tenant", name, details=saved.model_dump(mode="json"))
    console.print(escape(saved.model_dump_json()))
