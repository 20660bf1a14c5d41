"""Every block of the docs runs, so the docs cannot drift from the code.

The convention, for README.md and docs/*.md:
- A fenced ```bash block is executed. A page's bash and python blocks run in page order in one bash
  session (`set -euo pipefail`), in a fresh temporary directory laid out like a checkout (the
  repository's top-level files linked in), with `HMS_HOME=./.hms` (the default) and the project's
  `.venv/bin` first on PATH.
- A fenced ```python block is written to a file and run with the venv's python in that session, so
  it sees what the bash blocks before it exported (`HMS_API_KEY`, ...).
- Servers: a bash line that is `hms serve`, `make serve`, `hms ui`, `make ui` or `litellm` (the LiteLLM
  proxy) is started in the background and waited for (`/readyz` of the service, `/server_info` of the
  Dagster webserver, `/health/liveliness` of the proxy); the following blocks talk to it; it is stopped
  when the page ends. The test gives each server a free port: it adds `--port`/`PORT=` to the line (the
  proxy's `--port 4000` is replaced) and replaces `:8000`, `:3000` and `:4000` in the page's blocks.
- `curl` runs with `--fail-with-body`: an HTTP error status fails the block.
- `make` lines other than servers are checked with `make -n` (the install and run targets exist and
  parse; `make run` and `make test` are the install commands, run by the project's own setup).
- ```json, ```yaml and ```toml blocks are configuration: parsed (JSON Lines too), never executed.
- Any other fence language fails the test, and so does an indented code block outside a list.
- A block that needs what a test machine cannot have (a provider's key, other hosts) carries
  `<!-- not run: <reason> -->` on the line before it; those are counted, and more than
  MAX_NOT_RUN fail the test.
- A page whose text contains TOUR_HOME_MARKER starts from a copy of the home the README's tour built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXECUTED, PARSED = {"bash", "python"}, {"json", "yaml", "toml"}
MAX_NOT_RUN = 4
NOT_RUN = re.compile(r"<!-- not run: (\S.*?) -->")
TOUR_HOME_MARKER = "<!-- docs test: runs on the home the README's tour built -->"
SERVER = re.compile(r"^(hms serve|make serve|hms ui|make ui|litellm)\b")
LINKED = ["hms_resources", "hms_assets", "hms_jobs", "benchmarks", "tests", "Makefile", "pyproject.toml", "dagster.yaml", "workspace.yaml", ".venv"]
PAGE_TIMEOUT_S = 900


@dataclass
class Block:
    page: Path
    line: int
    language: str
    text: str
    not_run: str | None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the line they open on and their `not run` marker."""
    found, lines, index = [], page.read_text().split("\n"), 0
    while index < len(lines):
        fence = re.match(r"^(\s*)```(\S*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        indent, start, body = len(fence.group(1)), index, []
        index += 1
        while not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        marker = NOT_RUN.search(lines[start - 1]) if start else None
        found.append(Block(page, start + 1, fence.group(2), "\n".join(body) + "\n", marker and marker.group(1)))
        index += 1
    return found


def indented_code(page: Path) -> list[int]:
    """Lines that open an indented code block (four spaces after a blank line, outside lists and fences)."""
    openings, lines, fenced = [], page.read_text().split("\n"), False
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            fenced = not fenced
        previous = lines[number - 2] if number > 1 else ""
        if not fenced and line.startswith("    ") and not previous.strip() and line.strip() and not re.match(r"^\s*([-*]|\d+\.)\s", line):
            earlier = next((lines[i] for i in range(number - 2, -1, -1) if lines[i].strip()), "")
            if not re.match(r"^\s*([-*]|\d+\.)\s", earlier) and not earlier.startswith("  "):
                openings.append(number)
    return openings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shell_script(page: Path, work: Path) -> str:
    """One bash session for the page: its bash blocks as written, python blocks as files, servers in the background."""
    ports = {"8000": free_port(), "3000": free_port(), "4000": free_port()}
    out = ["set -euo pipefail", "servers=()",
           "stop_servers() { for pid in \"${servers[@]}\"; do kill -TERM \"$pid\" 2>/dev/null || true; done; sleep 2; }",
           "trap stop_servers EXIT",
           "curl() { command curl --fail-with-body \"$@\"; }",
           "wait_ready() {  # url pid log\n  for _ in $(seq 1 300); do\n    command curl -sf -o /dev/null \"$1\" && return 0\n"
           "    kill -0 \"$2\" 2>/dev/null || { echo \"server exited:\" >&2; tail -50 \"$3\" >&2; return 1; }\n    sleep 1\n  done\n"
           "  echo \"not ready: $1\" >&2; tail -50 \"$3\" >&2; return 1\n}"]
    for number, block in enumerate(blocks(page)):
        if block.not_run or block.language not in EXECUTED:
            continue
        text = block.text
        for documented, port in ports.items():
            text = text.replace(f":{documented}", f":{port}")
        out.append(f"echo '>>> block {block}' >&2")
        if block.language == "python":
            script = work / f"block-{number}.py"
            script.write_text(text)
            out.append(f"python {script.name}")
            continue
        for line in text.split("\n"):
            command = line.split("  #", 1)[0].strip()
            if SERVER.match(command):
                ui, proxy = command.endswith("ui"), command.startswith("litellm")
                port = ports["4000" if proxy else "3000" if ui else "8000"]
                if proxy:
                    command = command.replace("--port 4000", f"--port {port}")
                else:
                    command += f" PORT={port}" if command.startswith("make serve") else "" if "--port" in command else f" --port {port}"
                log = f"server-{number}.log"
                url = f"http://127.0.0.1:{port}/" + ("health/liveliness" if proxy else "server_info" if ui else "readyz")
                out.append(f"{command} >{log} 2>&1 &\nservers+=($!)\nwait_ready {url} $! {log}")
            elif command.startswith("make "):
                out.append(f"make -n {command[5:]} >/dev/null")
            else:
                out.append(line)
    return "\n".join(out) + "\n"


def checkout_copy(work: Path) -> None:
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)


def run_page(page: Path, work: Path, home: Path | None = None) -> str:
    checkout_copy(work)
    if home is not None:
        shutil.copytree(home, work / ".hms")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HMS_", "DAGSTER_", "NEO4J_", "MLFLOW_"))}
    env.update(HMS_HOME=str(work / ".hms"), PATH=f"{ROOT / '.venv' / 'bin'}:{env['PATH']}", PYTHONUNBUFFERED="1")
    (work / "page.sh").write_text(shell_script(page, work))
    process = subprocess.Popen(["bash", "page.sh"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=PAGE_TIMEOUT_S)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process.returncode != 0:
        failed = re.findall(r">>> block (\S+)", output)
        pytest.fail(f"{failed[-1] if failed else page.name} failed (exit {process.returncode}):\n{output[-6000:]}")
    return output


@pytest.fixture(scope="module")
def tour_home(tmp_path_factory) -> Path:
    """The README's tour, run once: its home is where the pages marked with TOUR_HOME_MARKER start."""
    work = tmp_path_factory.mktemp("README")
    run_page(ROOT / "README.md", work)
    return work / ".hms"


def test_every_block_is_executed_parsed_or_visibly_not_run():
    every = [block for page in PAGES for block in blocks(page)]
    unknown = [f"{b} ```{b.language}" for b in every if b.language not in EXECUTED | PARSED]
    assert unknown == [], "a block must be bash or python (executed) or json, yaml, toml (parsed)"
    indented = [f"{page.relative_to(ROOT)}:{line}" for page in PAGES for line in indented_code(page)]
    assert indented == [], "fence code blocks, so that the test sees them"
    not_run = [f"{b}: {b.not_run}" for b in every if b.not_run]
    assert len(not_run) <= MAX_NOT_RUN, f"too many blocks not run: {not_run}"


@pytest.mark.parametrize("block", [b for page in PAGES for b in blocks(page) if b.language in PARSED and not b.not_run], ids=str)
def test_configuration_blocks_parse(block: Block):
    if block.language == "yaml":
        assert yaml.safe_load(block.text) is not None
    elif block.language == "toml":
        tomllib.loads(block.text)
    else:
        try:
            json.loads(block.text)
        except json.JSONDecodeError:
            for line in filter(str.strip, block.text.split("\n")):
                json.loads(line)


def test_the_readme_tour_runs(tour_home: Path):
    assert (tour_home / "hms.db").exists()


@pytest.mark.parametrize("page", [p for p in PAGES[1:] if any(b.language in EXECUTED and not b.not_run for b in blocks(p))], ids=lambda p: p.name)
def test_the_blocks_of_a_docs_page_run(page: Path, tmp_path: Path, request):
    home = request.getfixturevalue("tour_home") if TOUR_HOME_MARKER in page.read_text() else None
    run_page(page, tmp_path, home)


def test_the_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_layout_page_lists_every_domain_directory():
    """docs/layout.md names each directory of the three packages (two levels deep), and each one it names exists."""
    text = (ROOT / "docs" / "layout.md").read_text()
    listed = {name.rstrip("/") for name in re.findall(r"`((?:hms_resources|hms_assets|hms_jobs)/[\w/]*)`", text)}
    present = {str(p.relative_to(ROOT)) for package in ("hms_resources", "hms_assets", "hms_jobs")
               for p in (ROOT / package).glob("*/") if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))}
    present |= {str(p.relative_to(ROOT)) for p in (ROOT / "hms_resources").glob("*/*/")
                if p.is_dir() and p.name != "__pycache__" and not p.name.startswith(".")}
    missing = sorted(d for d in listed if d.count("/") and not (ROOT / d).is_dir() and not (ROOT / d).is_file())
    unlisted = sorted(present - listed)
    assert missing == [], f"docs/layout.md names directories that do not exist: {missing}"
    assert unlisted == [], f"directories docs/layout.md does not list: {unlisted}"
