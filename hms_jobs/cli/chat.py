"""`hms chat --user U`: talk to the local model with the user's memory, in the terminal."""

from __future__ import annotations

import sys

import click

from hms_jobs.cli import main


@main.command()
@click.option("--user", "user_id", required=True, help="Whose memory the model uses (a user id as stored).")
@click.option("--session", default=None, help="The session the turns are recorded in [default: a new one].")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=200, show_default=True)
@click.option("--context-tokens", type=click.IntRange(1, 8192), default=512, show_default=True, help="The memory context's budget.")
@click.option("--capture/--no-capture", default=True, show_default=True, help="Record the exchange as memories.")
def chat(user_id: str, session: str | None, max_tokens: int, context_tokens: int, capture: bool) -> None:
    """Chat with the local model (SmolLM2-135M-Instruct by default) over the store the environment
    names: each turn gets the user's context in its system turn and the user's champion adapter
    when one matches; the replies stream, and the memories and adapter used are shown. Ctrl-D ends."""
    import uuid

    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.integration.local_model import LocalModel
    from hms_resources.integration.plugin import LocalMemory

    memory = LocalMemory(ContextAssembler.from_env(), capture=capture)
    model = LocalModel.from_env()
    session = session or f"chat-{uuid.uuid4().hex[:12]}"
    history: list[dict] = []
    click.echo(f"hms chat with {user_id}'s memory (session {session}); Ctrl-D to end.", err=True)
    while True:
        try:
            text = click.prompt("you", prompt_suffix="> ", err=True)
        except (EOFError, click.exceptions.Abort):
            click.echo("", err=True)
            return
        history.append({"role": "user", "content": text})
        call = memory.before_call(user_id, history, max_tokens=context_tokens, session_id=session)
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
