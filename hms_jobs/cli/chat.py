"""`hms chat --user maya`: talk to the local model with the user's memory, in the terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hms_jobs.cli import main
from hms_jobs.cli.users import api_name, known_user, tenant_names, tenant_option

if TYPE_CHECKING:
    from hms_resources.integration.local_model import LocalModel
    from hms_resources.integration.plugin import LocalMemory


@main.command()
@click.option("--user", "user_id", required=True, help="Whose memory the model uses: the user's name in the API (`maya`).")
@tenant_option
@click.option("--session", default=None, help="The session the turns are recorded in [default: a new one].")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=200, show_default=True)
@click.option("--context-tokens", type=click.IntRange(1, 8192), default=512, show_default=True, help="The memory context's budget.")
@click.option("--capture/--no-capture", default=True, show_default=True, help="Record the exchange as memories.")
def chat(user_id: str, tenant: str, session: str | None, max_tokens: int, context_tokens: int, capture: bool) -> None:
    """Chat with the local model (SmolLM2-135M-Instruct by default) over the store the environment
    names: each turn gets the user's context and the user's champion adapter when one matches; the
    replies stream, and the memories and adapter used are shown. An unknown user is refused with the
    nearest names. The first start converts the model file once (about 20 s). Ctrl-D ends."""
    import uuid

    from hms_resources.common.model_libraries import quiet_progress
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.integration.local_model import LocalModel
    from hms_resources.integration.plugin import LocalMemory

    assembler = ContextAssembler.from_env()
    name = api_name(tenant, known_user(assembler.event_store, tenant, user_id))
    memory = LocalMemory(assembler, capture=capture, names=tenant_names(tenant))
    model = LocalModel.from_env().load(progress=lambda line: click.echo(line, err=True))
    session = session or f"chat-{uuid.uuid4().hex[:12]}"
    click.echo(f"hms chat with {name}'s memory (tenant {tenant!r}, session {session}); Ctrl-D to end.", err=True)
    with quiet_progress():  # the embedder and reranker load at the first question: no bars between question and reply
        converse(memory, model, name, session, max_tokens, context_tokens)


def converse(memory: LocalMemory, model: LocalModel, name: str, session: str, max_tokens: int, context_tokens: int) -> None:
    """Turns until end of input: each question with the user's context, the reply streamed and recorded."""
    history: list[dict] = []
    while True:
        try:
            text = click.prompt("you", prompt_suffix="> ", err=True)
        except (EOFError, click.exceptions.Abort):
            click.echo("", err=True)
            return
        history.append({"role": "user", "content": text})
        call = memory.before_call(name, history, max_tokens=context_tokens, session_id=session)
        adapter = model.adapter_for(call.adapter)
        shown = f"adapter {adapter.name}@{adapter.version}" if adapter else "no adapter"
        click.echo(f"  [{len(call.memory_ids)} memories, {shown}]", err=True)
        pieces = []
        for piece in model.stream(call.messages, adapter=adapter, max_tokens=max_tokens):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        reply = "".join(pieces)
        memory.after_call(call, reply)
        history.append({"role": "assistant", "content": reply})
