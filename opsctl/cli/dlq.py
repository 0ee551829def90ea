"""opsctl dlq: the dispatcher's dead-letter topic (`<topic>.dlq`): list what is in it and why,
replay records to their topic after fixing their cause (or the record itself)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup
from opsctl.cli._options import LocalStateDirOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.dlq import DlqRecord, KafkaTarget, ReplayOutcome

app = typer.Typer(
    cls=OpsctlGroup,
    help="The dispatcher's dead-letter topic: `list` its records with the reason each was "
    "dead-lettered, `replay` them. Works on the local stack (--stack local) or any Kafka "
    "given with --bootstrap.",
    no_args_is_help=True,
)

DEFAULT_TOPIC = "im.messages"  # IMGW_KAFKA_TOPIC's default (gateway/config.py)


@dataclass(frozen=True)
class DlqTarget(OnRoot):
    """The Kafka whose DLQ the commands work on: --bootstrap, else the local stack's."""

    state_dir: Path | None
    bootstrap: str | None
    topic: str | None
    group: str | None

    @cached_property
    def kafka(self) -> KafkaTarget:
        from opsctl.dlq import KafkaTarget, local_target
        from opsctl.errors import UserInputError

        if self.bootstrap:
            region = self.spec.primary.name if self.stack != "local" else "local"
            return KafkaTarget(
                self.bootstrap,
                self.topic or DEFAULT_TOPIC,
                self.group or f"im-dispatcher.{region}",
                "--bootstrap",
            )
        if self.stack != "local":
            raise UserInputError(
                f"stack '{self.stack}': opsctl reaches a DLQ by itself only on the local stack",
                hint="give the region's Kafka with --bootstrap HOST:PORT (e.g. through a "
                "port-forward), or use --stack local",
            )
        found = local_target(self.state_dir)
        if self.topic or self.group:
            return KafkaTarget(
                found.bootstrap,
                self.topic or found.topic,
                self.group or found.group,
                found.source,
            )
        return found


@app.callback()
def target(
    ctx: typer.Context,
    *,
    state_dir: Annotated[
        Path | None,
        like(
            LocalStateDirOption,
            help="State dir of the local stack whose Kafka to use (--stack local). "
            "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        ),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            metavar="HOST:PORT",
            help="Kafka bootstrap servers. [default: the local stack's]",
            show_default=False,
        ),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            help=f"The messages topic; its DLQ is <topic>.dlq. [default: the stack's "
            f"IMGW_KAFKA_TOPIC, {DEFAULT_TOPIC}]",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="The dispatcher's consumer group (replay --wait watches its commits). "
            "[default: im-dispatcher.<region>]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Every dlq command takes --state-dir, --bootstrap, --topic and --group (also after it)."""
    ctx.obj = DlqTarget(RootOptions.of(ctx), state_dir, bootstrap, topic, group)


def _time(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every record in the DLQ, oldest first per partition: its position (PARTITION@OFFSET, what
    `replay --offset` takes), when, the reason (undecodable, or poison: it failed every attempt
    alone while the backends were healthy), the stage and error, the record it came from, and
    the DLQ record it is a replay of. Exit 0 (also when empty), 1 when Kafka does not answer,
    2 on bad input."""
    from opsctl import console
    from opsctl.cli._output import print_table
    from opsctl.dlq import list_records

    dlq = DlqTarget.of(ctx)
    kafka = dlq.kafka
    console.debug(f"reading {kafka.dlq_topic} at {kafka.bootstrap} ({kafka.source})")
    records = list_records(kafka)
    if dlq.json:
        console.emit_json({"topic": kafka.dlq_topic, "records": [r.as_dict() for r in records]})
        return
    if not records:
        console.info(f"{kafka.dlq_topic} is empty")
        return
    print_table(
        f"{kafka.dlq_topic}: {len(records)} record(s)",
        ("position", "time (UTC)", "reason", "stage", "tries", "source", "replay of", "error"),
        (_row(r) for r in records),
    )


def _row(record: DlqRecord) -> list[str]:
    data = record.as_dict()
    return [
        record.position,
        _time(record.timestamp_ms),
        data["reason"] or "-",
        data["stage"] or "-",
        str(data["attempts"] or "-"),
        data["source"] or "-",
        (data["replay_of"] or "-").rsplit("/", 1)[-1],
        _cut(data["error"], 80),
    ]


@app.command()
def replay(
    ctx: typer.Context,
    *,
    offset: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            metavar="PARTITION@OFFSET",
            help="A DLQ record to replay (`opsctl dlq list`); just OFFSET when the DLQ has one "
            "partition. Repeatable.",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every record in the DLQ.")] = False,
    value_file: Annotated[
        Path | None,
        typer.Option(
            "--value-file",
            help="Replay the one --offset record with this value instead (the record, fixed).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            help="Wait up to this long for the dispatcher to commit past the replayed records, "
            "then report each: processed, or poison again (exit 1). 0: do not wait.",
        ),
    ] = 0.0,
) -> None:
    """Produce DLQ records back to the topic they came from, with their key and a `replay-of`
    header naming the DLQ record. Fix the cause first (a dispatcher fix, or the record itself
    with --value-file). A replay that is still poison is dead-lettered again with the same
    `replay-of`; --wait finds it. Exit 0 replayed (and, with --wait, all processed), 1 some are
    poison again or Kafka does not answer, 2 bad input (nothing was replayed), 3 --wait ran out
    before the dispatcher committed past them."""
    from opsctl import console
    from opsctl.dlq import list_records, select
    from opsctl.dlq import replay as replay_records
    from opsctl.errors import CheckFailed, Inconclusive, UserInputError

    dlq = DlqTarget.of(ctx)
    if bool(offset) == all_:
        raise UserInputError("give --offset (repeatable) or --all")
    if wait < 0:
        raise UserInputError(f"--wait {wait}: must be 0 or more seconds")
    value = value_file.read_bytes() if value_file is not None else None
    if value is not None and (all_ or len(offset or ()) != 1):
        raise UserInputError("--value-file replaces the value of exactly one --offset record")
    kafka = dlq.kafka
    records = list_records(kafka)
    chosen = records if all_ else select(records, offset or [])
    if not chosen:
        console.info(f"{kafka.dlq_topic} is empty; nothing to replay")
        return
    if wait:
        console.info(
            f"replaying {len(chosen)} record(s); waiting up to {wait:g}s for the dispatcher"
        )
    outcome = replay_records(kafka, chosen, value=value, wait_s=wait)
    _report(dlq.json, kafka, outcome)
    if outcome.poisoned:
        names = ", ".join(r.dlq_position.rsplit("/", 1)[-1] for r in outcome.poisoned)
        raise CheckFailed(
            f"{len(outcome.poisoned)} replayed record(s) are still poison: {names}",
            hint="`opsctl dlq list` shows their new DLQ records and errors",
        )
    if outcome.pending:
        raise Inconclusive(
            f"{len(outcome.pending)} replayed record(s) not yet committed by "
            f"{kafka.group} after {wait:g}s",
            hint="is the dispatcher running and caught up? look again with `opsctl dlq list`",
        )


def _report(as_json: bool, kafka: KafkaTarget, outcome: ReplayOutcome) -> None:
    from opsctl import console
    from opsctl.cli._output import print_table

    if as_json:
        console.emit_json(
            {
                "topic": kafka.dlq_topic,
                "waited": outcome.waited,
                "replayed": [r.as_dict() for r in outcome.replayed],
            }
        )
        return
    print_table(
        f"replayed from {kafka.dlq_topic}",
        ("dlq record", "replayed to", "status", "error"),
        (
            [r.dlq_position.rsplit("/", 1)[-1], r.position, r.status, _cut(r.error, 80)]
            for r in outcome.replayed
        ),
    )
