"""Whole programs run bare and traced (``run``, ``instrument()``) show the same to the world.

Each case is a program a user could write; :func:`tests.differential_processes.compare` runs it
bare and traced and compares stdout, stderr, exit code and ``sys.argv``, and asks each traced
process that made loops to have counted them all closed, none leaked.
"""

from __future__ import annotations

from pathlib import Path

from .differential_processes import compare

CLOSE_AT_EXIT = """
import asyncio, atexit
loop = asyncio.new_event_loop()
atexit.register(loop.close)  # called from C at exit: no Python caller
print("registered", loop.is_closed())
"""


def test_a_loop_closed_by_atexit(tmp_path: Path) -> None:
    bare = compare(tmp_path, CLOSE_AT_EXIT)
    assert (bare.stdout, bare.stderr, bare.returncode) == ("registered False\n", "", 0)


CLOSE_IN_A_C_THREAD = """
import _thread, asyncio, sys, time
loop = asyncio.new_event_loop()
_thread.start_new_thread(loop.close, ())  # run from C: no Python caller
deadline = time.monotonic() + 30
while _thread._count() or not loop.is_closed():  # the thread is done, its output written
    if time.monotonic() > deadline:
        sys.exit("the thread did not end")
    time.sleep(0.001)
print("closed", loop.is_closed())
"""


def test_a_loop_closed_in_a_thread_started_from_c(tmp_path: Path) -> None:
    bare = compare(tmp_path, CLOSE_IN_A_C_THREAD)
    assert (bare.stdout, bare.stderr, bare.returncode) == ("closed True\n", "", 0)


FACTORY_WITH_AN_INNER_LOOP = """
import asyncio, sys
def factory():
    asyncio.SelectorEventLoop().close()  # a probe, made and closed inside the factory
    return asyncio.SelectorEventLoop()
async def main():
    return "ran"
if sys.version_info >= (3, 12):
    print(asyncio.run(main(), loop_factory=factory))
if sys.version_info >= (3, 11):
    with asyncio.Runner(loop_factory=factory) as runner:
        print(runner.run(main()))
loop = factory()
print(loop.run_until_complete(main()))
loop.close()
"""


def test_a_factory_that_makes_an_inner_loop(tmp_path: Path) -> None:
    bare = compare(tmp_path, FACTORY_WITH_AN_INNER_LOOP)
    assert bare.stderr == "" and bare.stdout.endswith("ran\n")


POLICY_WITH_A_PROBE_LOOP = """
import asyncio, sys
from asyncio import DefaultEventLoopPolicy
class ProbingPolicy(DefaultEventLoopPolicy):
    def new_event_loop(self):
        super().new_event_loop().close()  # a probe, made and closed by the policy
        return super().new_event_loop()
async def main():
    return "ran"
asyncio.set_event_loop_policy(ProbingPolicy())
print(asyncio.run(main()))
loop = asyncio.new_event_loop()
loop.close()
print(sys.argv[1:])
"""


def test_a_policy_whose_new_event_loop_makes_and_closes_a_probe(tmp_path: Path) -> None:
    bare = compare(tmp_path, POLICY_WITH_A_PROBE_LOOP, "a", "-x")
    assert bare.returncode == 0 and bare.stdout == "ran\n['a', '-x']\n", bare.stderr


FORK_WITH_HEALTH_ON = """
import asyncio, os, sys
async def main():
    await asyncio.sleep(0.01)  # long enough for a watchdog to look, were one running
    return os.getpid()
asyncio.run(main())
print("parent ran", flush=True)  # flushed: the child must not print it again
pid = os.fork()  # single-threaded again: no "multi-threaded ... fork()" DeprecationWarning
if pid == 0:
    asyncio.run(main())
    print("child ran", flush=True)
    sys.exit(3)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
      else status >> 8)
"""


def test_a_single_threaded_program_that_forks_with_health_on(tmp_path: Path) -> None:
    """Health's watchdog runs only while a watched loop runs: at the fork the program is
    single-threaded, as bare, and the child tallies only its own loop."""
    bare = compare(tmp_path, FORK_WITH_HEALTH_ON, env={"TRACEDPOLICY_HEALTH": "1"})
    assert (bare.stdout, bare.stderr) == ("parent ran\nchild ran\nchild exit 3\n", "")


RE_EXEC = """
import asyncio, os, sys
asyncio.run(asyncio.sleep(0))
if sys.argv[1:] == ["first"]:
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, sys.argv[0], "again", "--", "x"])
print("image", sys.argv[1:])
"""


def test_a_program_that_re_executes_itself(tmp_path: Path) -> None:
    """The new image is traced as the old one was (under ``run``, the bootstrap goes with
    it): its output, argv and exit code as bare, its one loop counted closed."""
    bare = compare(tmp_path, RE_EXEC, "first")
    assert (bare.stdout, bare.stderr) == ("image ['again', '--', 'x']\n", "")
    assert [argv[1:] for argv in bare.argv] == [["again", "--", "x"]]


ARGV = """
import sys
print(sys.argv[1:])
"""


def test_a_double_dash_among_the_programs_arguments_is_passed_on(tmp_path: Path) -> None:
    bare = compare(tmp_path, ARGV, "--", "-k", "x", "--", all_closed=False)
    assert bare.stdout == "['--', '-k', 'x', '--']\n"
