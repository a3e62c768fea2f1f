"""The ``interest-stream`` command line.

Each subcommand lives in its own module under :mod:`consumers.commands` and is
registered here. Heavy imports (torch, sentence-transformers, kafka) happen inside
the commands, so ``interest-stream --help`` stays instant.

Example::

    $ interest-stream --help
"""

from __future__ import annotations

import typer

from consumers.commands import broker, demo, forget, inspect, produce, replay, report, run

app = typer.Typer(
    name="interest-stream",
    help=(
        "Streaming, incremental user-interest clustering on Apache Kafka.\n\n"
        "Behaviour events are embedded with sentence-transformers, folded into "
        "time-decayed user profiles and clustered by an online mini-batch k-means; "
        "every change of a user's cluster is published on an output topic."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

app.command("run")(run.run)
app.command("replay")(replay.replay)
app.command("produce")(produce.produce)
app.command("forget")(forget.forget)
app.command("inspect")(inspect.inspect)
app.command("report")(report.report)
app.command("demo")(demo.demo)
app.add_typer(broker.app, name="broker", help="Start, stop or inspect the local development Kafka broker.")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
