"""The static gate judges what each chunk calls, resolved through the program's imports, per preset."""

import pytest

from eager.common.config import Settings
from eager.common.protocol import GateAction
from eager.executor_pool.static_gate import Decision, Escape, Preset, Rules, StaticGate


def decisions(*chunks: str, preset: str = "strict", escapes: str = "", extra: str = "") -> list[Decision]:
    """Judge a program's chunks in order, each at its line of the program."""
    gate = StaticGate(Rules.parse(preset, escapes, extra))
    line, out = 1, []
    for code in chunks:
        out.append(gate.judge(code, line))
        line += code.count("\n")
    return out


def last(*chunks: str, **kwargs: str) -> Decision:
    return decisions(*chunks, **kwargs)[-1]


HARMLESS = [
    ("import os\n",),
    ("import subprocess, shutil, socket, time, signal, threading\n",),
    ("import os\n", "p = os.path.join('a', 'b')\n"),
    ("import os\n", "print(os.getcwd(), os.listdir('.'), os.environ.get('HOME'), os.sep)\n"),
    ("import os.path\n", "os.path.exists('x')\n"),
    ("import os.path as osp\n", "osp.join('a', 'b')\n"),
    ("from os import path\n", "path.basename('a/b')\n"),
    ("import shutil\n", "shutil.which('ls')\n"),
    ("with open('data.csv') as f:\n    rows = f.read()\n",),
    ("open('a.txt', 'r').read()\n",),
    ("open('a.txt', mode='rb')\n",),
    ("open('a.txt', 'rt', encoding='utf-8')\n",),
    ("import json\n", "json.loads('{}')\n"),
    ("x = [i * i for i in range(5)]\n",),
    ("import pandas as pd\n", "df = pd.DataFrame({'a': [1]})\n", "text = df.to_csv()\n"),
    ("remove = 3\n", "print(remove)\n"),
    ("archive.open('data.csv')\n",),
    ("def f():\n    return 1\n", "print(f())\n"),
    ("import webbrowser\n", "webbrowser.open('data.html')\n"),  # the module's function, not a file's .open
    ("text = 'a b'.replace('a', 'b')\n",),
]


@pytest.mark.parametrize("preset", list(Preset))
@pytest.mark.parametrize("chunks", HARMLESS, ids=lambda c: c[-1][:40])
def test_imports_and_harmless_calls_run_under_every_preset(chunks, preset):
    assert last(*chunks, preset=preset).action is GateAction.RUN


STRICT_ONLY = [
    # (chunks, what the reason names)
    (("import os\n", "os.remove('x')\n"), "calls os.remove at line 2 (external side effect; preset strict)"),
    (("import os\n", "os.system('ls')\n"), "calls os.system at line 2"),
    (("import os\n", "os.makedirs('d', exist_ok=True)\n"), "calls os.makedirs at line 2"),
    (("import subprocess\n", "subprocess.run(['ls'])\n"), "calls subprocess.run at line 2 (external side effect"),
    (("import subprocess as sp\n", "sp.run(['ls'])\n"), "calls sp.run (subprocess.run) at line 2"),
    (("from os import remove\n", "remove('x')\n"), "calls remove (os.remove) at line 2"),
    (("from os import remove as rm\n", "rm('x')\n"), "calls rm (os.remove) at line 2"),
    (("from subprocess import *\n", "check_output(['ls'])\n"), "calls check_output (subprocess.check_output)"),
    (("import os\n", "rm = os.remove\n", "rm('x')\n"), "calls rm (os.remove) at line 3"),
    (("import shutil\n", "shutil.rmtree('d')\n"), "calls shutil.rmtree at line 2"),
    (("import socket\n", "s = socket.socket()\n"), "calls socket.socket at line 2"),
    (("import multiprocessing as mp\n", "pool = mp.Pool(2)\n"), "calls mp.Pool (multiprocessing.Pool)"),
    (("import time\n", "time.sleep(1)\n"), "calls time.sleep at line 2 (timing; preset strict)"),
    (("import time\n", "t0 = time.perf_counter()\n"), "(timing; preset strict)"),
    (("import threading\n", "threading.Thread(target=print).start()\n"), "calls threading.Thread at line 2"),
    (("import signal\n", "signal.signal(signal.SIGINT, print)\n"), "calls signal.signal at line 2 (timing"),
    (("eval('1 + 1')\n",), "calls eval at line 1 (dynamic execution; preset strict)"),
    (("exec('x = 1')\n",), "calls exec at line 1 (dynamic execution"),
    (("code = compile('1', 'f', 'eval')\n",), "calls compile at line 1"),
    (("m = __import__('os')\n",), "calls __import__ at line 1"),
    (("import importlib\n", "m = importlib.import_module('os')\n"), "calls importlib.import_module at line 2"),
    (("import builtins\n", "builtins.exec('x = 1')\n"), "calls builtins.exec (exec) at line 2"),
    (("with open('out.csv', 'w') as f:\n    f.write('a')\n",), "calls open(..., 'w') at line 1 (file write; preset strict)"),
    (("open('log.txt', 'a').write('x')\n",), "calls open(..., 'a') at line 1"),
    (("open('new.txt', 'x')\n",), "calls open(..., 'x')"),
    (("open('data.bin', 'r+b')\n",), "calls open(..., 'r+b')"),
    (("open('data.bin', 'wb')\n",), "calls open(..., 'wb')"),
    (("f = open('out.txt', mode='w')\n",), "calls open(..., 'w')"),
    (("f = open('out.txt', encoding='utf-8', mode='a')\n",), "calls open(..., 'a')"),
    (("mode = 'r'\n", "open('f', mode)\n"), "calls open with a mode not known before it runs at line 2 (file write"),
    (("open('f', 'r' if x else 'w')\n",), "calls open with a mode not known before it runs"),
    (("open(*args)\n",), "calls open with a mode not known before it runs"),
    (("open('f', **options)\n",), "calls open with a mode not known before it runs"),
    (("import io\n", "io.open('f', 'w')\n"), "calls io.open(..., 'w')"),
    (("import gzip\n", "gzip.open('f.gz', 'wt')\n"), "calls gzip.open(..., 'wt')"),
    (("from pathlib import Path\n", "Path('a.txt').write_text('x')\n"), "calls .write_text at line 2 (file write"),
    (("from pathlib import Path\n", "Path('d').mkdir()\n"), "calls .mkdir at line 2"),
    (("from pathlib import Path\n", "Path('a').unlink()\n"), "calls .unlink at line 2"),
    (("from pathlib import Path\n", "f = Path('a').open('w')\n"), "calls .open('w') at line 2"),
    (("import pandas as pd\n", "df = pd.DataFrame()\n", "df.to_csv('out.csv')\n"), "calls .to_csv at line 3"),
    (("df.to_json(path_or_buf='out.json')\n",), "calls .to_json at line 1"),
    (("df.to_parquet('out.parquet')\n",), "calls .to_parquet"),
    (("fig.savefig('plot.png')\n",), "calls .savefig at line 1"),
    (("import numpy as np\n", "np.save('a.npy', [1])\n"), "calls np.save (numpy.save) at line 2"),
    (("import json\n", "json.dump({}, handle)\n"), "calls json.dump at line 2"),
    # a held call inside a function runs when the function is used
    (("import os\n", "def cleanup(p):\n    os.remove(p)\n", "cleanup('x')\n"),
     "uses cleanup at line 4, defined at line 2, which calls os.remove at line 3 (external side effect; preset strict)"),
    (("import time\n", "def work(n):\n    time.sleep(0.1)\n    return n\n", "a = work(1)\n"),
     "uses work at line 5, defined at line 2, which calls time.sleep at line 3 (timing"),
    (("import os\n", "class Store:\n    def drop(self):\n        os.remove('x')\n", "s = Store()\n"),
     "uses Store at line 5, defined at line 2, which calls os.remove at line 4"),
    (("import os\n", "purge = lambda: os.remove('x')\n", "purge()\n"), "uses purge at line 3, defined at line 2"),
    (("import os\n", "def a():\n    os.remove('x')\n", "def b():\n    a()\n", "b()\n"),
     "uses b at line 6, defined at line 4, which calls a at line 5"),
    (("import os\n", "def cleanup(p):\n    os.remove(p)\n", "paths = list(map(cleanup, ['x']))\n"),
     "uses cleanup at line 4"),
    # a function-local import still resolves
    (("def run():\n    import subprocess as sp\n    sp.run(['ls'])\n", "run()\n"), "which calls sp.run (subprocess.run)"),
]


@pytest.mark.parametrize(("chunks", "reason"), STRICT_ONLY, ids=lambda c: c[-1][:40] if isinstance(c, tuple) else "")
def test_strict_holds_external_effects_timing_dynamic_execution_and_file_writes(chunks, reason):
    decision = last(*chunks, preset="strict")
    assert decision.action is GateAction.HOLD
    assert reason in decision.reason, decision.reason


@pytest.mark.parametrize(("chunks", "reason"), STRICT_ONLY, ids=lambda c: c[-1][:40] if isinstance(c, tuple) else "")
def test_sandboxed_lets_the_same_calls_run_early(chunks, reason):
    assert last(*chunks, preset="sandboxed").action is GateAction.RUN


BOTH = [
    (("import signal\n", "signal.alarm(5)\n"), "calls signal.alarm at line 2 (alarm or timer"),
    (("from signal import setitimer, ITIMER_REAL\n", "setitimer(ITIMER_REAL, 1.0)\n"),
     "calls setitimer (signal.setitimer) at line 2"),
    (("import threading\n", "threading.Timer(1.0, print).start()\n"), "calls threading.Timer at line 2"),
    (("name = input('name? ')\n",), "calls input at line 1 (reads stdin"),
    (("import sys\n", "data = sys.stdin.read()\n"), "calls sys.stdin.read at line 2 (reads stdin"),
    (("import sys\n", "for line in sys.stdin:\n    print(line)\n"), "uses sys.stdin at line 2 (reads stdin"),
    (("from sys import stdin\n", "stdin.readline()\n"), "calls stdin.readline (sys.stdin.readline) at line 2"),
    (("text = open(0).read()\n",), "calls open(0) at line 1 (reads stdin"),
    (("import signal\n", "def arm():\n    signal.alarm(1)\n", "arm()\n"), "uses arm at line 4, defined at line 2"),
    (("import faulthandler\n", "faulthandler.dump_traceback_later(1.0, exit=True)\n"),
     "calls faulthandler.dump_traceback_later at line 2 (alarm or timer"),
    (("import os\n", "pid = os.fork()\n"), "calls os.fork at line 2 (forks: run early, the child would end with its batch"),
    (("from os import fork\n", "if fork() == 0:\n    print('child')\n"), "calls fork (os.fork) at line 2 (forks"),
    (("import os as o\n", "pid, fd = o.forkpty()\n"), "calls o.forkpty (os.forkpty) at line 2 (forks"),
    (("import pty\n", "pid, fd = pty.fork()\n"), "calls pty.fork at line 2 (forks"),
]


@pytest.mark.parametrize("preset", list(Preset))
@pytest.mark.parametrize(("chunks", "reason"), BOTH, ids=lambda c: c[-1][:40] if isinstance(c, tuple) else "")
def test_alarms_timers_and_stdin_are_held_under_every_preset(chunks, reason, preset):
    decision = last(*chunks, preset=preset)
    assert decision.action is GateAction.HOLD
    assert reason in decision.reason and f"preset {preset})" in decision.reason, decision.reason


NETWORK = [
    ("import socket\n", "c = socket.create_connection(('example.com', 80))\n"),
    ("import urllib.request\n", "page = urllib.request.urlopen('http://example.com')\n"),
    ("from urllib.request import urlopen\n", "urlopen('http://example.com')\n"),
    ("import requests\n", "r = requests.get('http://example.com')\n"),
    ("import http.client as hc\n", "c = hc.HTTPConnection('example.com')\n"),
]


@pytest.mark.parametrize("chunks", NETWORK, ids=lambda c: c[-1][:40])
def test_network_calls_are_held_under_sandboxed_only_when_the_deployer_allows_network(chunks):
    assert last(*chunks, preset="sandboxed").action is GateAction.RUN
    held = last(*chunks, preset="sandboxed", escapes="network")
    assert held.action is GateAction.HOLD and "(network; preset sandboxed)" in held.reason
    assert last(*chunks, preset="strict").action is GateAction.HOLD


SHARED_FILES = [
    ("with open('out.csv', 'w') as f:\n    f.write('a')\n",),
    ("import os\n", "os.remove('x')\n"),
    ("from os import rename\n", "rename('a', 'b')\n"),
    ("import shutil\n", "shutil.rmtree('d')\n"),
    ("from pathlib import Path\n", "Path('a.txt').write_text('x')\n"),
    ("df.to_csv('out.csv')\n",),
]


@pytest.mark.parametrize("chunks", SHARED_FILES, ids=lambda c: c[-1][:40])
def test_file_changes_are_held_under_sandboxed_only_when_a_shared_directory_is_mounted(chunks):
    assert last(*chunks, preset="sandboxed").action is GateAction.RUN
    held = last(*chunks, preset="sandboxed", escapes="files")
    assert held.action is GateAction.HOLD and "may leave the sandbox through a shared directory" in held.reason


@pytest.mark.parametrize("chunks", [("import os\n", "os.system('ls')\n"), ("import os\n", "p = os.path.join('a')\n"),
                                    ("open('in.csv').read()\n",)], ids=["os.system", "os.path.join", "open read"])
def test_a_shared_directory_holds_file_changes_not_processes_or_reads(chunks):
    assert last(*chunks, preset="sandboxed", escapes="files").action is GateAction.RUN


@pytest.mark.parametrize("preset", list(Preset))
def test_the_deployer_holds_more_names_under_any_preset(preset):
    decision = last("import mylib.db as db\n", "db.drop_all()\n", preset=preset, extra="mylib.db, requests.post")
    assert decision.action is GateAction.HOLD
    assert decision.reason == f"calls db.drop_all (mylib.db.drop_all) at line 2 (held by the deployer; preset {preset})"
    assert last("import requests\n", "requests.post('u')\n", preset=preset, extra="requests.post").action is GateAction.HOLD
    assert last("import requests\n", "requests.get('u')\n", preset="sandboxed", extra="requests.post").action is GateAction.RUN


@pytest.mark.parametrize("code", [
    "def f(x):\n    return x\n",
    "async def f():\n    return 1\n",
    "class Point:\n    x: int = 0\n",
    "@dataclass\nclass Point:\n    x: int = 0\n",
    "@functools.lru_cache\ndef f(x):\n    return x\n",
    "def f():\n    pass\ndef g():\n    pass\n",
])
@pytest.mark.parametrize("preset", list(Preset))
def test_definitions_are_merged_with_the_next_chunk(code, preset):
    decision = last(code, preset=preset)
    assert decision.action is GateAction.MERGE and decision.reason.startswith("definition of ")


def test_a_chunk_that_defines_and_uses_runs():
    assert last("def f():\n    return 1\nprint(f())\n").action is GateAction.RUN


def test_a_held_call_that_runs_at_definition_time_holds_the_definition():
    """Defaults, decorators and class bodies run when the definition does."""
    assert last("import time\n", "def f(t=time.time()):\n    return t\n").action is GateAction.HOLD
    assert last("import os\n", "@os.system\ndef f():\n    pass\n").action is GateAction.HOLD
    held = last("import os\n", "class C:\n    os.remove('x')\n")
    assert held.action is GateAction.HOLD and "os.remove at line 3" in held.reason


def test_a_harmless_redefinition_clears_the_mark():
    program = ("import os\n", "def f():\n    os.remove('x')\n", "def f():\n    return 1\n", "f()\n")
    assert last(*program).action is GateAction.RUN


def test_a_definition_shadows_an_imported_name():
    assert last("from os import remove\n", "def remove(p):\n    return p\n", "remove('x')\n").action is GateAction.RUN


def test_the_first_held_call_of_a_chunk_is_named_at_its_line_in_the_program():
    gate = StaticGate(Rules(Preset.STRICT))
    gate.judge("import os, subprocess\n", 1)
    decision = gate.judge("x = 1\nsubprocess.run(['a'])\nos.remove('b')\n", 10)
    assert decision.line == 11 and "calls subprocess.run at line 11" in decision.reason


def test_a_chunk_that_does_not_parse_alone_is_held():
    decision = last("x = (\n", preset="sandboxed")
    assert decision.action is GateAction.HOLD and "cannot be judged alone" in decision.reason


def test_rules_parse_the_settings_and_refuse_typos():
    assert Rules.parse(Settings().gate_preset, Settings().gate_escapes, Settings().gate_hold) == Rules()
    assert Rules() == Rules(Preset.SANDBOXED)
    assert Rules.parse("strict", " network , files ", "a.b,,c") == Rules(
        Preset.STRICT, frozenset({Escape.NETWORK, Escape.FILES}), ("a.b", "c"))
    with pytest.raises(ValueError, match="unknown gate preset 'paranoid'"):
        Rules.parse("paranoid")
    with pytest.raises(ValueError, match="unknown sandbox escape 'disk'"):
        Rules.parse("sandboxed", "disk")


def test_a_sandbox_without_its_own_network_opens_the_network_escape():
    rules = Rules.parse("sandboxed", "files", "x.y").opening(Escape.NETWORK)
    assert rules == Rules(Preset.SANDBOXED, frozenset({Escape.FILES, Escape.NETWORK}), ("x.y",))
    gate = StaticGate(rules)
    gate.judge("import requests\n", 1)
    assert gate.judge("requests.get('http://example.com')\n", 2).action is GateAction.HOLD


def test_common_data_methods_are_not_mistaken_for_file_changes():
    program = ("import pandas as pd\n", "df = pd.DataFrame({'a': [1]})\n", "df = df.rename(columns={'a': 'b'})\n")
    assert last(*program).action is GateAction.RUN


DEEP_SUM = "total = " + " + ".join(["1"] * 600) + "\n"
LONG_ELIF = "x = 3\nif x == 0:\n    y = 0\n" + "".join(f"elif x == {i}:\n    y = {i}\n" for i in range(1, 500))


@pytest.mark.parametrize("preset", list(Preset))
@pytest.mark.parametrize("code", [DEEP_SUM, LONG_ELIF], ids=["600-term sum", "500-branch elif"])
def test_a_chunk_nested_deeper_than_the_recursion_limit_is_judged(code, preset):
    assert last(code, preset=preset) == Decision(GateAction.RUN)
    held = last("import os\n", code.replace("1 + 1", "os.fork() + 1", 1).replace("y = 499\n", "y = os.fork()\n"),
                preset=preset)
    assert held.action is GateAction.HOLD and "calls os.fork at line" in held.reason


def test_a_chunk_the_gate_fails_on_is_held_with_the_reason():
    """Python refuses a 10000-term sum too (RecursionError while compiling): the gate holds it, and the
    interpreter, running it with the rest of the program, reports what python reports."""
    decision = last("total = " + " + ".join(["1"] * 10_000) + "\n", preset="sandboxed")
    assert decision.action is GateAction.HOLD and decision.line == 1
    assert decision.reason.startswith("cannot be judged (RecursionError: maximum recursion depth exceeded")
    assert decision.reason.endswith("; preset sandboxed)")
