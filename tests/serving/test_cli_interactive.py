"""`satchel sql` interactive, as a person at a terminal uses it: the real CLI in a
pseudo-terminal (it is the controlling terminal: Ctrl-C is a real SIGINT from the line
discipline) against a real `satchel run`."""

from __future__ import annotations

import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.integration.waiting import wait_for
from tests.silent_server import SilentServerDouble, silent_server  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "satchel> "


def _sigint_as_at_a_terminal() -> None:
    """A suite run as a background job (`.ci/run &` from a script) has SIGINT ignored, and its
    children inherit that: Python then never raises KeyboardInterrupt. These tests are about a
    person at a terminal, so the CLI starts with Ctrl-C's default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`satchel sql ARGS` on a pty: `send` keys, `expect` text (returns what came before it)."""

    def __init__(self, args: list[str], home: Path) -> None:
        (home / ".inputrc").write_text("set enable-bracketed-paste off\n")
        env = {**os.environ, "HOME": str(home), "TERM": "dumb", "INPUTRC": str(home / ".inputrc"),
               "SATCHEL_LOG_LEVEL": "WARNING"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the CLI, with the pty as its controlling terminal
            os.chdir(REPO)
            _sigint_as_at_a_terminal()
            os.execve(sys.executable, [sys.executable, "-m", "serving.cli", "sql", *args], env)
        self.seen = ""

    def send(self, keys: str) -> None:
        if keys == "\x03":
            # A person's Ctrl-C comes well after the prompt shows; one sent in the instant between the
            # prompt and readline's read is held by readline until the next key (a known readline race).
            time.sleep(0.3)
        os.write(self.fd, keys.encode())

    def expect(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen in {timeout}s; the terminal shows:\n{self.seen}")
            import select

            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child exited
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} not seen before the CLI exited:\n{self.seen}")
                self.seen += ANSI.sub(b"", chunk).decode(errors="replace").replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before

    def exit_code(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        raise AssertionError("the CLI did not exit")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def open_(*args: str) -> Terminal:
        opened.append(Terminal(list(args), tmp_path))
        return opened[-1]

    yield open_
    for t in opened:
        t.close()


def test_meta_commands(satchel_flight, terminal):
    t = terminal("--flight", f"127.0.0.1:{satchel_flight.port}")
    t.expect(PROMPT)
    t.send("\\?\n")
    assert "\\d NAME" in t.expect(PROMPT) and "\\timing" in t.seen + "\\timing"
    t.send("\\d\n")
    listed = t.expect(PROMPT)
    assert re.search(r"public +\| trips +\| table", listed) and re.search(r"public +\| trip_cities +\| view", listed)
    t.send("\\dt\n")
    tables = t.expect(PROMPT)
    assert "trips" in tables and "trip_cities" not in tables
    t.send("\\d trips\n")
    columns = t.expect(PROMPT)
    assert "table public.trips" in columns
    assert re.search(r"id +\| int64 +\|", columns) and re.search(r"started_at +\| timestamp\[us\] +\|", columns)
    t.send("\\d trip\n")
    assert "error: no dataset named 'trip'; did you mean 'trips'?" in t.expect(PROMPT)
    t.send("\\x\n")
    assert "Expanded display is on." in t.expect(PROMPT)
    t.send("select id, city from trips where id = 2;\n")
    expanded = t.expect(PROMPT)
    assert re.search(r"-\[ RECORD 1 \]-*\n *id +\| 2\n *city +\| lima\n\(1 rows\)", expanded), expanded
    t.send("\\x\n")
    assert "Expanded display is off." in t.expect(PROMPT)
    t.send("\\timing\n")
    assert "Timing is on." in t.expect(PROMPT)
    t.send("select count(*) as n\n")  # a statement over two lines
    t.expect("-> ")
    t.send("from trips;\n")
    timed = t.expect(PROMPT)
    assert re.search(r"n +\n-+\n10000 *\n\(1 rows\)\nTime: \d+\.\d{3} ms", timed), timed
    t.send("selec 1;\n")  # errors as `satchel sql QUERY` reports them, and the session goes on
    error = t.expect(PROMPT)
    assert "error: sql_error: SQL syntax error: SELEC does not start a SQL statement" in error, error
    assert "Detail" not in error and "Traceback" not in error
    t.send("\\q\n")
    assert t.exit_code() == 0


def test_explain_is_shown_in_full(satchel_flight, terminal):
    t = terminal("--flight", f"127.0.0.1:{satchel_flight.port}")
    t.expect(PROMPT)
    t.send("explain select t.id, c.country from trips t join cities c on t.city = c.name where t.fare > 100;\n")
    plan = t.expect(PROMPT)
    assert "..." not in plan
    assert max(len(line) for line in plan.splitlines()) > 80, plan  # longer than a cut cell (60)
    t.send("\x04")  # Ctrl-D exits
    assert t.exit_code() == 0


def test_ctrl_c_at_the_prompt_clears_the_buffer_and_history_persists(satchel_flight, terminal, tmp_path):
    t = terminal("--flight", f"127.0.0.1:{satchel_flight.port}")
    t.expect(PROMPT)
    t.send("select 'never run'\n")
    t.expect("-> ")
    t.send("\x03")  # Ctrl-C: the buffer is dropped, the prompt is back (not the continuation)
    t.expect(PROMPT)
    t.send("select 'half typed")
    t.expect("half typed")
    t.send("\x03")  # Ctrl-C in the middle of a line drops the line
    t.expect(PROMPT)
    t.send("select 41 + 1 as answer;\n")
    out = t.expect(PROMPT)
    assert "42" in out and "never run" not in out and "half typed" not in out and "error" not in out
    t.send("\x04")
    assert t.exit_code() == 0
    assert "select 41 + 1 as answer;" in (tmp_path / ".satchel_history").read_text()
    again = terminal("--flight", f"127.0.0.1:{satchel_flight.port}")
    again.expect(PROMPT)
    again.send("\x1b[A\n")  # up-arrow: the last statement, from the history file
    assert "42" in again.expect(PROMPT)
    again.send("\\q\n")
    assert again.exit_code() == 0


def test_ctrl_c_cancels_a_running_statement_and_the_source_statement(satchel_server, silent_server, terminal):
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: cancel
runtime:
  params:
    query_timeout: 0s
datasets:
  - from: {silent_server.url('/never.csv')}
    name: never
    params:
      http_timeout: 600s
      file_format: csv
    columns:
      - name: a
        type: BIGINT
""", wait_ready=False)
    t = terminal("--flight", f"127.0.0.1:{server.flight_port}")
    t.expect(PROMPT)
    opened_before = silent_server.accepted
    t.send("select a from never;\n")
    assert wait_for(lambda: silent_server.open_connections() >= 1, timeout=20), server.log()
    t.send("\x03")  # a real SIGINT to the CLI
    assert "cancelled" in t.expect(PROMPT, timeout=10)
    # the server cancelled the source statement: its connection to the source is closed
    # (http_timeout is 600 s and there is no query deadline: nothing else closes it)
    assert wait_for(lambda: silent_server.open_connections() == 0, timeout=20), \
        (silent_server.accepted, opened_before, silent_server.requests, server.log())
    assert silent_server.accepted > opened_before
    t.send("select 1 as one;\n")  # the session goes on
    assert re.search(r"one\s*\n-+\s*\n1", t.expect(PROMPT))
    t.send("\\q\n")
    assert t.exit_code() == 0


def test_interactive_over_tls_with_an_api_key(satchel_flight_tls, tls_files, terminal):
    tls = ["--flight", f"127.0.0.1:{satchel_flight_tls.port}", "--tls-root-certs", str(tls_files.cert_file)]
    t = terminal(*tls, "--api-key", "k-tls")
    t.expect(PROMPT)
    t.send("select count(*) as n from trips;\n")
    assert "10000" in t.expect(PROMPT)
    t.send("\\q\n")
    assert t.exit_code() == 0
    refused = terminal(*tls)
    refused.expect(PROMPT)
    refused.send("select 1;\n")
    assert "error: unauthenticated: missing API key" in refused.expect(PROMPT)
    refused.send("\\q\n")
    assert refused.exit_code() == 0


def test_ctrl_c_cancels_a_statement_waiting_for_its_data(satchel_server, source_server, terminal):
    """Planned (the schema is known), then the source stalls on the rows: Ctrl-C cancels the
    DoGet stream and the server records the query as cancelled, long before the source answers."""
    source_server.files["/slow.csv"] = b"a\n1\n2\n"
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: stall
runtime:
  params:
    query_timeout: 0s
datasets:
  - from: {source_server.url('/slow.csv')}
    name: slow
    params:
      http_timeout: 600s
""", wait_ready=False)
    t = terminal("--flight", f"127.0.0.1:{server.flight_port}")
    t.expect(PROMPT)
    t.send("select count(*) as n from slow;\n")
    assert re.search(r"n\s*\n-+\s*\n2", t.expect(PROMPT))
    hits = source_server.count("/slow.csv")
    source_server.plan("/slow.csv", [(200, 120)])  # the next read stalls for two minutes
    t.send("select a from slow where a > 1;\n")
    assert wait_for(lambda: source_server.count("/slow.csv") > hits, timeout=20)
    started = time.monotonic()
    t.send("\x03")
    assert "cancelled" in t.expect(PROMPT, timeout=10)

    def recorded_cancelled() -> bool:  # the server notices the cancel at its next poll
        t.send("select error_code from runtime.task_history where query_text like '%a > 1;';\n")
        return re.search(r"error_code\s*\n-+\s*\ncancelled", t.expect(PROMPT)) is not None

    assert wait_for(recorded_cancelled, timeout=20), server.log()
    assert time.monotonic() - started < 30  # the source would have stalled for 120 s
    t.send("\\q\n")
    assert t.exit_code() == 0


def test_ctrl_c_cancels_a_one_shot_query(satchel_server, silent_server, tmp_path):
    """`satchel sql QUERY` stuck on a silent source: SIGINT ends it at once (exit 130) and the
    server closes its source connection."""
    import subprocess

    server = satchel_server(f"""
version: v1
kind: Spicepod
name: oneshot
runtime:
  params:
    query_timeout: 0s
datasets:
  - from: {silent_server.url('/never.csv')}
    name: never
    params:
      http_timeout: 600s
""", wait_ready=False)
    process = subprocess.Popen([sys.executable, "-m", "serving.cli", "sql", "--flight",
                                f"127.0.0.1:{server.flight_port}", "select * from never"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_sigint_as_at_a_terminal)
    try:
        assert wait_for(lambda: silent_server.open_connections() >= 1, timeout=20)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert out == "" and "Traceback" not in err
    assert wait_for(lambda: silent_server.open_connections() == 0, timeout=20)


def test_one_shot_results_larger_than_a_grpc_message(satchel_flight):
    """10 MB in one batch (gRPC's default limit is 4 MB), every type read back from the stream."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "serving.cli", "sql", "--flight", f"127.0.0.1:{satchel_flight.port}",
                           "--max-rows", "2", "select id, city, fare, started_at, repeat('x', 1000) as pad "
                           "from trips order by id"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "(10000 rows (showing 2))"
    assert re.match(r"1 +\| oslo +\| 1\.5 +\| 2024-01-01 01:00:00 +\| x{57}\.\.\.$", lines[2]), lines[2]
