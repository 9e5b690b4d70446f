"""The jail's layers one by one, with real interpreters: seccomp, signal dispositions, the tree's memory limit,
clean-up of any tree, and what `EAGER_SANDBOX_ISOLATION` does on a host that lacks a layer.

A host without a layer is a real one, not a mock: `setpriv` drops CAP_SYS_ADMIN from the bounding set, as a
container without privileges has it, so no namespace can be made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from eager.executor_pool.interpreter import Interpreter, LimitExceeded
from eager.executor_pool.sandbox import SandboxConfig, remove_tree
from tests.executor.test_sandbox import SMALL, Output

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

PROBES = """import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
calls = {'ptrace': (101, 0, 0, 0, 0), 'process_vm_readv': (310, 1, 0, 0, 0, 0, 0), 'unshare': (272, 0x10000000),
         'setns': (308, 0, 0), 'mount': (165, b'none', b'/tmp', b'tmpfs', 0, 0), 'fsopen': (430, b'tmpfs', 0),
         'open_tree': (428, -100, b'/', 0), 'pivot_root': (155, b'/', b'/'), 'bpf': (321, 0, 0, 0),
         'perf_event_open': (298, 0, 0, -1, -1, 0), 'keyctl': (250, 0, -3, 0), 'add_key': (248, b'user', b'k', b'v', 1, -4),
         'userfaultfd': (323, 0), 'io_uring_setup': (425, 1, 0), 'clone': (56, 0x10000000 | 17, 0, 0, 0, 0),
         'swapon': (167, b'/x', 0), 'reboot': (169, 0, 0, 0, 0), 'init_module': (175, 0, 0, b''),
         'kexec_load': (246, 0, 0, 0, 0)}
denied = {}
for name, (number, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    denied[name] = errno.errorcode.get(ctypes.get_errno()) if result == -1 else 'ran'
print(denied)
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
print(status['Seccomp'].strip(), status['NoNewPrivs'].strip())
"""

FOREIGN_ABI = """import ctypes, mmap, os, signal
def killed_by(call):
    pid = os.fork()
    if pid == 0:
        call()
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    return signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else 'exited'
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20 (i386 getpid); int 0x80; ret
i386_getpid = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
libc = ctypes.CDLL(None)
print(killed_by(i386_getpid), killed_by(lambda: libc.syscall(0x40000000 | 39)), killed_by(os.getpid))
"""


@pytest.fixture
def jailed() -> Iterator[Interpreter]:
    with Interpreter(sandbox=SMALL) as it:
        yield it


@needs_root
def test_seccomp_denies_what_a_program_never_needs_from_its_first_line(jailed: Interpreter) -> None:
    out = Output()
    assert jailed.run(PROBES, 1, out, timeout=10).ok
    denied, modes = out.text().splitlines()
    assert eval(denied) == {name: "EPERM" for name in eval(denied)}  # keyctl, io_uring, a user namespace: not EPERM without it
    assert modes == "2 1"  # a filter, and no_new_privs


@needs_root
def test_system_calls_of_another_abi_kill_the_caller(jailed: Interpreter) -> None:
    out = Output()
    assert jailed.run(FOREIGN_ABI, 1, out, timeout=10).ok
    assert out.text() == "SIGSYS SIGSYS exited\n"  # i386 int 0x80 and x32 numbers bypass no filter entry


def test_the_interpreter_starts_with_default_signal_dispositions() -> None:
    """An RQ work horse ignores SIGINT, and an ignored or blocked signal survives fork and exec."""
    polite = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    before = {number: signal.signal(number, signal.SIG_IGN) for number in polite}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    try:
        it = Interpreter(sandbox=SMALL)
        it.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for number, handler in before.items():
            signal.signal(number, handler)
    out = Output()
    try:
        code = ("import signal\nstatus = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
                "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, int(status['SigBlk'], 16),\n"
                "      int(status['SigIgn'], 16) == (1 << signal.SIGPIPE - 1) | (1 << signal.SIGXFSZ - 1))")
        assert it.run(code, 1, out, timeout=10).ok
    finally:
        it.close()
    assert out.text() == "True 0 True\n"  # Python itself ignores only SIGPIPE and SIGXFSZ


@needs_root
def test_memory_of_the_whole_sandbox_is_bounded_and_its_tmpfs_counts(jailed: Interpreter) -> None:
    """No single allocation passes the address-space limit, yet files in its tmpfs /tmp are memory too."""
    code = "for i in range(700):\n    with open(f'/tmp/f{i}', 'wb') as f:\n        f.write(b'x' * (1 << 20))"
    big = Interpreter(sandbox=SandboxConfig(**{**SMALL.__dict__, "disk_mb": 2048}))
    with big, pytest.raises(LimitExceeded) as info:
        big.run(code, 1, Output(), timeout=30)
    assert f"memory limit of {SMALL.memory_mb} MB for the whole sandbox exceeded" in str(info.value)


def test_removing_any_tree_never_raises(tmp_path: Path) -> None:
    """10,000 levels (a RecursionError for shutil.rmtree, and paths past PATH_MAX), unwritable directories,
    many files: removed, and nothing raised."""
    top = tmp_path / "deep"
    top.mkdir()
    here = os.open(top, os.O_RDONLY)
    for level in range(10_000):
        os.mkdir("d", dir_fd=here)
        if level % 1000 == 0:
            for name in range(200):
                os.close(os.open(f"f{name}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=here))
        below = os.open("d", os.O_RDONLY, dir_fd=here)
        if level % 2500 == 0:
            os.chmod("d", 0, dir_fd=here)
        os.close(here)
        here = below
    os.close(here)
    with pytest.raises(RecursionError):
        shutil.rmtree(top)
    remove_tree(str(top))
    assert not top.exists()
    remove_tree(str(top))  # gone already: still no exception


PROBE_HOST = """import sys
sys.path.insert(0, %r)
from eager.executor_pool.interpreter import Interpreter, InterpreterError
from eager.executor_pool.sandbox import SandboxConfig
try:
    with Interpreter(sandbox=SandboxConfig(cpu_s=5, memory_mb=512, isolation=sys.argv[1])) as it:
        print(it.isolation, it.run("print('ran')", 1, lambda _s, text: print(text, end=""), timeout=10).ok)
except InterpreterError as exc:
    print("refused:", exc)
"""


HOSTS = {  # a root without CAP_SYS_ADMIN (an unprivileged container), and no root at all
    "no-sys-admin": ["setpriv", "--bounding-set", "-sys_admin", sys.executable],
    "not-root": ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                 "env", f"PYTHONPATH={sysconfig.get_paths()['purelib']}", "/usr/bin/python3"],
}


@needs_root
@pytest.mark.parametrize(("host", "policy", "expected"), [
    ("no-sys-admin", "require", "refused: sandbox: EAGER_SANDBOX_ISOLATION=require, and this host does not allow "
     "pidns (needs CAP_SYS_ADMIN); mntns (needs CAP_SYS_ADMIN); ipcns (needs CAP_SYS_ADMIN); "
     "utsns (needs CAP_SYS_ADMIN); netns (needs CAP_SYS_ADMIN)\n"),
    ("no-sys-admin", "best-effort", "ran\ncgroup+seccomp+uid True\n"),
    ("not-root", "", "ran\nseccomp True\n"),  # best-effort is the default without root
])
def test_a_host_without_a_layer_is_refused_under_require_and_runs_best_effort(host: str, policy: str,
                                                                               expected: str) -> None:
    probe = subprocess.run([*HOSTS[host], "-c", PROBE_HOST % str(ROOT), policy], capture_output=True, text=True,
                           timeout=60)
    assert probe.stdout == expected, probe


DATA_SCIENCE = """import multiprocessing, os
import numpy as np
with multiprocessing.Pool(2) as pool:  # its semaphores live in /dev/shm, its workers in the pid namespace
    squares = pool.map(abs, [-1, -2, -3])
print(squares, float(np.linalg.solve(np.eye(2) * 2, np.ones(2)).sum()), os.getcwd())
"""
BENCH_PYTHON = ROOT / ".venv-sandbox" / "bin" / "python"


@needs_root
def test_the_executors_own_python_with_numpy_and_multiprocessing_runs_in_the_jail() -> None:
    out = Output()
    with Interpreter(python=sys.executable, sandbox=SMALL) as it:
        assert it.run(DATA_SCIENCE, 1, out, timeout=30).ok
    assert out.text() == "[1, 2, 3] 1.0 /sandbox\n"


@needs_root
def test_the_benchmark_tasks_packages_import_in_the_jail() -> None:
    out = Output()
    code = ("import numpy, pandas, scipy.stats, sklearn.linear_model\n"
            "model = sklearn.linear_model.LinearRegression().fit(numpy.arange(4.0).reshape(-1, 1), [1, 3, 5, 7])\n"
            "print(pandas.Series([1, 2]).sum(), round(scipy.stats.norm.cdf(0), 2), round(model.coef_[0], 3))")
    with Interpreter(python=str(BENCH_PYTHON), sandbox=SandboxConfig(memory_mb=2048)) as it:
        assert it.isolation.startswith("pidns+mntns")
        assert it.run(code, 1, out, timeout=60).ok
    assert out.text() == "3 0.5 2.0\n"


@needs_root
def test_an_interpreter_inside_the_hosts_tmp_is_shown_above_the_jails_own_tmp(tmp_path: Path) -> None:
    """A checkout under /tmp (as CI clones one) has its .venv-sandbox there: the jail's private /tmp must not
    hide it, and the program still finds a /tmp of its own to write."""
    venv = Path("/tmp") / f"eager-venv-test-{os.getpid()}"
    subprocess.run([sys.executable if os.geteuid() != 0 else "/usr/bin/python3", "-m", "venv", "--without-pip",
                    str(venv)], check=True)
    try:
        out = Output()
        with Interpreter(python=str(venv / "bin" / "python"), sandbox=SMALL) as it:
            assert it.run("import sys\nopen('/tmp/mine', 'w').write('x')\nprint(sys.prefix)\n", 1, out,
                          timeout=30).ok
        assert out.text() == f"{venv}\n"
    finally:
        shutil.rmtree(venv)
