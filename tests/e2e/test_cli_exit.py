"""How the installed ``searchengine`` script ends: the user's exit status and every
line of output kept, the interpreter's teardown skipped (``searchengine.cli.run``).

Each case runs the console script's own ``run`` in a fresh interpreter, with a little
code of the test's around it that Python's normal shutdown would treat differently.
"""

import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("searchengine"))

# Prints at exit without flushing (lost unless the quick exit flushes after the
# handlers), and from a module global's finalizer (only the interpreter's teardown
# runs that).
AROUND = """
import atexit, sys, threading, time
from searchengine.cli import run

class Teardown:
    def __del__(self):
        print("teardown ran")

teardown = Teardown()
atexit.register(lambda: print("exit handler ran"))
if "--with-thread" in sys.argv:
    sys.argv.remove("--with-thread")
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished"))).start()
sys.argv[0] = "searchengine"
run()
"""


def script(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", AROUND, *args]
    # Output to a pipe buffered, as a user's shell gives it (no PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120, env=env
    )


def test_a_command_ends_after_its_exit_handlers_without_the_teardown():
    done = script("--version")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("searchengine, version")
    assert "exit handler ran" in lines  # run, and its unflushed line delivered
    assert "teardown ran" not in lines


def test_exit_statuses_are_the_commands_own(tmp_path):
    usage = script("search")  # no query
    assert usage.returncode == 2
    assert "Missing argument 'QUERY'" in usage.stderr
    missing = script("search", "a dog", "--index-dir", str(tmp_path))
    assert missing.returncode == 1
    assert "no collection 'default'" in missing.stderr
    assert "exit handler ran" in missing.stdout and "teardown ran" not in missing.stdout


def test_output_to_a_closed_pipe_exits_1_without_a_traceback():
    # As `searchengine search ... | head -1` meets it once head has gone.
    read, write = os.pipe()
    os.close(read)
    try:
        done = script("--version", stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "teardown ran" not in done.stderr


def test_a_thread_still_running_gets_pythons_own_exit():
    done = script("--with-thread", "--version")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "thread finished" in lines  # the interpreter waited for it
    assert "exit handler ran" in lines


def test_the_installed_script_is_the_quick_one(tmp_path):
    entry = Path(CLI).read_text()
    assert "from searchengine.cli import run" in entry
    done = subprocess.run(
        [CLI, "search", "x", "--index-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "no collection 'default'" in done.stderr
