"""``interest-stream broker start|stop|status``: a local Apache Kafka broker for development.

``start`` runs a one-node KRaft broker (see :mod:`consumers.devbroker`) in the background on free ports
of 127.0.0.1, records it in ``${XDG_STATE_HOME:-~/.local/state}/interest-stream/broker.json`` and
prints its bootstrap address; ``stop`` ends it and removes its data (unless ``--keep-data``);
``status`` tells whether it is alive. Every command uses this broker when neither
``--bootstrap-servers`` nor ``INTEREST_STREAM_BOOTSTRAP_SERVERS`` nor ``KAFKA_BOOTSTRAP_SERVERS``
names a cluster (:func:`consumers.kafka_config.resolve_bootstrap`); when one of the two variables is
set, that cluster is used and ``start`` does nothing.

Example::

    $ interest-stream broker start
    $ export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:40123
    $ interest-stream broker stop
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="A local Apache Kafka broker (KRaft, one node) for development and the demo.",
                  no_args_is_help=True)


@app.command()
def start(
    data_dir: Path | None = typer.Option(
        None, help="Data directory (default: ${XDG_STATE_HOME:-~/.local/state}/interest-stream/kafka-data)."),
    port: int = typer.Option(0, help="Client (PLAINTEXT) port; 0 picks a free one."),
    controller_port: int = typer.Option(0, help="KRaft controller port; 0 picks a free one."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Start the broker in the background and print its bootstrap address.

    Commands use it when neither --bootstrap-servers, $INTEREST_STREAM_BOOTSTRAP_SERVERS nor
    $KAFKA_BOOTSTRAP_SERVERS names a cluster; with one of the two variables set, nothing is started.
    """
    from rich.console import Console

    from consumers import devbroker
    from consumers.kafka_config import BOOTSTRAP_ENV, configured_bootstrap

    console = Console()
    external = configured_bootstrap()
    if external:
        console.print(f"{external[0]} is set ({external[1]}): using that cluster, not starting a broker.")
        return
    running = devbroker.load_state()
    if running is not None and running.is_alive():
        console.print(f"A broker is already running (pid {running.pid}) at {running.bootstrap_servers}.")
        console.print(f"export {BOOTSTRAP_ENV}={running.bootstrap_servers}")
        return
    if running is not None and data_dir is None and Path(running.data_dir or "").is_dir():
        broker = running  # its data was kept by `stop --keep-data`: reuse the directory and ports
    else:
        broker = devbroker.DevBroker(data_dir or devbroker.state_home() / "kafka-data", broker_port=port,
                                     controller_port=controller_port, detach=True, keep_data=True)
    broker.startup_timeout = timeout
    with console.status(f"Starting Apache Kafka {broker.version} (the first run fetches its jars with Maven)..."):
        try:
            broker.start()
        except devbroker.BrokerError as exc:
            console.print(f"[red]The broker did not start:[/red] {exc}", markup=True, highlight=False)
            raise typer.Exit(1) from None
    devbroker.save_state(broker)
    console.print(f"Kafka {broker.version} is up at [bold]{broker.bootstrap_servers}[/bold] "
                  f"(pid {broker.pid}, {broker.last_start_seconds:.1f} s; log {broker.log_path}).")
    console.print(f"export {BOOTSTRAP_ENV}={broker.bootstrap_servers}", highlight=False, soft_wrap=True)


@app.command()
def stop(
    keep_data: bool = typer.Option(False, "--keep-data", help="Keep the data directory (topics, offsets)."),
) -> None:
    """Stop the broker started by ``broker start``."""
    from consumers import devbroker

    broker = devbroker.load_state()
    if broker is None:
        typer.echo("No broker was started by `interest-stream broker start`.")
        return
    was_alive = broker.is_alive()
    broker.stop(keep_data=keep_data)
    if keep_data:
        devbroker.save_state(broker)
    else:
        devbroker.clear_state()
    what = "Stopped the broker" if was_alive else "The broker was not running"
    typer.echo(f"{what}; data {'kept in ' + str(broker.data_dir) if keep_data else 'removed'}.")


@app.command()
def status() -> None:
    """Show the broker's pid, bootstrap address, data directory and whether it is alive."""
    from rich.console import Console
    from rich.table import Table

    from consumers import devbroker
    from consumers.kafka_config import configured_bootstrap

    console = Console()
    external = configured_bootstrap()
    if external:
        console.print(f"{external[0]}={external[1]} (an external cluster; the local broker is not used).")
    broker = devbroker.load_state()
    if broker is None:
        console.print("No local broker (start one with `interest-stream broker start`).")
        raise typer.Exit(0 if external else 1)
    table = Table(show_header=False)
    for key, value in broker.status().items():
        table.add_row(key, str(value))
    console.print(table)
    raise typer.Exit(0 if broker.is_alive() else 1)
