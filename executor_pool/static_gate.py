"""The static gate: a look at what each chunk calls, deciding whether it may run before the program is complete.

Pure: chunk code in, a frozen `Decision` out; no I/O and no clock. It judges calls, not
imports: `import os` and `os.path.join(...)` are harmless, `os.remove(p)` is not. Names are
resolved through the imports and simple aliases of the program so far (`import subprocess as
sp; sp.run(...)`, `from os import remove; remove(p)`), so it is fed every chunk in order.

Why hold anything at all: a chunk that runs early runs before anyone knows whether the whole
answer is valid. If its effect cannot be undone (a file removed on a real machine, a request
sent) or would differ when run early (an alarm started seconds before the code after it
exists), running it early breaks "same answers as serial". Two presets trade yield against
caution:

- `strict` is the reference design's list: every external side effect (os, subprocess,
  shutil, socket, multiprocessing, file writes), timing (time, signal, threading) and dynamic
  execution (eval, exec, compile, `__import__`). Right for code on a real machine.
- `sandboxed` trusts the sandbox: its working directory is private and thrown away and it has
  no network, so writing files or starting processes there is undone by construction. It
  holds only what changes the program's meaning when run early (signal alarms and timers,
  forks, reading stdin) and, if the deployer opens a way out of the sandbox (`network`, or `files`
  for a mounted shared directory), the calls that would use it.

Both hold whatever the deployer adds by name. A definition (`def`, `class`) gains nothing
from running alone, so it is merged with the next chunk. A call inside a function body is
not run by the definition: it marks the function, and a later chunk that uses the function
is held as if it made the call itself.

This is a static look, not a proof: a held function passed around as a value
(`map(os.remove, paths)`) or reached through `getattr` is not seen.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from eager.common.protocol import GateAction


class Preset(StrEnum):
    STRICT = "strict"
    SANDBOXED = "sandboxed"


class Escape(StrEnum):
    """A way out of the sandbox the deployer may open; calls that use it are then held under `sandboxed`."""

    NETWORK = "network"
    FILES = "files"  # a shared directory is mounted: file writes may land outside the sandbox


EXTERNAL = "external side effect"
FILE_WRITE = "file write"
TIMING = "timing"
DYNAMIC = "dynamic execution"
TIMER = "alarm or timer: runs differently if started early"
FORK = "forks: run early, the child would end with its batch, before the statements after it exist"
STDIN = "reads stdin"
NETWORK = "network"
SHARED_FILES = "changes files, which may leave the sandbox through a shared directory"
DEPLOYER = "held by the deployer"


@dataclass(frozen=True, slots=True)
class Rule:
    """Holds calls to `name` and, unless `exact`, to anything under it (`os` covers `os.remove`)."""

    name: str
    category: str
    exact: bool = False
    allowed: tuple[str, ...] = ()  # harmless names under `name` (read-only queries)

    def matches(self, qualified: str) -> bool:
        if not _under(qualified, self.name) or (self.exact and qualified != self.name):
            return False
        return not any(_under(qualified, ok) for ok in self.allowed)


def _under(qualified: str, name: str) -> bool:
    return qualified == name or qualified.startswith(name + ".")


# Read-only parts of os and shutil: the strict preset lets these run early.
_OS_READ_ONLY = tuple(f"os.{n}" for n in (
    "path", "getcwd", "getcwdb", "getenv", "environ.get", "environ.copy", "environ.items", "environ.keys",
    "environ.values", "fspath", "fsencode", "fsdecode", "cpu_count", "listdir", "scandir", "walk", "stat", "lstat",
    "getpid", "getppid", "getuid", "getgid", "getlogin", "uname", "access", "urandom", "get_terminal_size",
    "sched_getaffinity", "devnull", "sep", "linesep", "pathsep", "curdir", "pardir", "extsep", "name",
))
_SHUTIL_READ_ONLY = ("shutil.which", "shutil.disk_usage", "shutil.get_terminal_size")

# What changes files when a shared directory is mounted (the `files` escape under `sandboxed`).
_OS_FILE_CHANGES = tuple(Rule(f"os.{n}", SHARED_FILES, exact=True) for n in (
    "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "mkdir", "makedirs", "chmod",
    "chown", "lchown", "link", "symlink", "truncate", "utime", "mkfifo", "mknod",
))

_SANDBOXED = (
    Rule("signal.alarm", TIMER, exact=True),
    Rule("signal.setitimer", TIMER, exact=True),
    Rule("threading.Timer", TIMER, exact=True),
    Rule("faulthandler.dump_traceback_later", TIMER, exact=True),
    Rule("os.fork", FORK, exact=True),
    Rule("os.forkpty", FORK, exact=True),
    Rule("pty.fork", FORK, exact=True),
    Rule("input", STDIN, exact=True),
    Rule("sys.stdin", STDIN),
    Rule("fileinput.input", STDIN, exact=True),
)

_NETWORK = tuple(Rule(name, NETWORK) for name in (
    "socket", "ssl", "urllib.request", "http.client", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib",
    "xmlrpc.client", "requests", "httpx", "aiohttp", "urllib3", "websocket", "websockets", "paramiko",
))

_STRICT = (
    *_SANDBOXED,  # first: their reasons are the more specific ("alarm or timer", not "timing")
    Rule("os", EXTERNAL, allowed=_OS_READ_ONLY),
    Rule("subprocess", EXTERNAL),
    Rule("shutil", EXTERNAL, allowed=_SHUTIL_READ_ONLY),
    Rule("socket", EXTERNAL),
    Rule("multiprocessing", EXTERNAL),
    Rule("concurrent.futures.ProcessPoolExecutor", EXTERNAL, exact=True),
    Rule("time", TIMING),
    Rule("signal", TIMING),
    Rule("threading", TIMING),
    Rule("eval", DYNAMIC, exact=True),
    Rule("exec", DYNAMIC, exact=True),
    Rule("compile", DYNAMIC, exact=True),
    Rule("__import__", DYNAMIC, exact=True),
    Rule("importlib.import_module", DYNAMIC, exact=True),
    *_NETWORK,
)

# Functions that open a file, and where their mode argument sits (position, default mode).
_OPENERS = {
    "open": (1, "r"), "io.open": (1, "r"), "codecs.open": (1, "r"), "gzip.open": (1, "rb"), "bz2.open": (1, "rb"),
    "lzma.open": (1, "rb"), "tarfile.open": (1, "r"), "zipfile.ZipFile": (1, "r"), "os.fdopen": (1, "r"),
}
# Module-level functions that write files.
_WRITERS = frozenset({
    "numpy.save", "numpy.savetxt", "numpy.savez", "numpy.savez_compressed", "pickle.dump", "json.dump",
    "os.write", "os.open", "os.truncate", "os.ftruncate",
})
# Methods that write files whatever they are called on (pathlib, pandas, matplotlib, numpy arrays).
_WRITER_METHODS = frozenset({
    "write_text", "write_bytes", "touch", "savefig", "tofile", "to_csv", "to_excel", "to_json", "to_parquet",
    "to_pickle", "to_hdf", "to_feather", "to_stata", "to_sql", "to_netcdf", "to_orc",
})
# Of those, the ones that only write when given a destination (to_csv() with none returns a string).
_WRITES_ONLY_WITH_DESTINATION = frozenset({"to_csv", "to_json", "to_html", "to_markdown", "to_latex"})
# Pathlib methods that change the file system (not `rename`: every DataFrame has one).
_FILE_CHANGE_METHODS = frozenset({"unlink", "rmdir", "mkdir", "symlink_to", "hardlink_to", "chmod"})
_MODE = re.compile(r"[rwxabtU+]{1,4}")
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True, slots=True)
class Rules:
    """The deployer's configuration of the static gate."""

    preset: Preset = Preset.SANDBOXED
    escapes: frozenset[Escape] = frozenset()
    extra: tuple[str, ...] = ()  # further dotted names to hold under any preset

    @classmethod
    def parse(cls, preset: str, escapes: str = "", extra: str = "") -> Rules:
        """From the settings' strings; raises ValueError naming what is wrong, so a typo fails at start."""
        try:
            chosen = Preset(preset.strip())
        except ValueError:
            raise ValueError(f"unknown gate preset {preset!r}: choose {', '.join(Preset)}") from None
        ways: set[Escape] = set()
        for word in _words(escapes):
            try:
                ways.add(Escape(word))
            except ValueError:
                raise ValueError(f"unknown sandbox escape {word!r}: choose {', '.join(Escape)}") from None
        return cls(chosen, frozenset(ways), tuple(_words(extra)))

    def opening(self, escape: Escape) -> Rules:
        """The same rules for a sandbox with one more way out (the executor learns at start whether it got
        its own network namespace; without one, network calls leave the sandbox)."""
        return Rules(self.preset, self.escapes | {escape}, self.extra)

    @property
    def holds_file_writes(self) -> bool:
        return self.preset is Preset.STRICT or Escape.FILES in self.escapes

    def call_rules(self) -> tuple[Rule, ...]:
        rules: list[Rule] = [Rule(name, DEPLOYER) for name in self.extra]
        if self.preset is Preset.STRICT:
            return (*rules, *_STRICT)
        rules.extend(_SANDBOXED)
        if Escape.NETWORK in self.escapes:
            rules.extend(_NETWORK)
        if Escape.FILES in self.escapes:
            rules.extend(_OS_FILE_CHANGES)
            rules.append(Rule("shutil", SHARED_FILES, allowed=_SHUTIL_READ_ONLY))
        return tuple(rules)

    @property
    def file_category(self) -> str:
        return FILE_WRITE if self.preset is Preset.STRICT else SHARED_FILES


def _words(text: str) -> Iterator[str]:
    return (word.strip() for word in text.split(",") if word.strip())


@dataclass(frozen=True, slots=True)
class Hit:
    """One call the rules hold: what it calls, where, and why."""

    call: str  # as written, with its resolution when different: "sp.run (subprocess.run)"
    line: int  # in the generated program
    category: str
    verb: str = "calls"
    via: str = ""  # for a use of a function whose body makes the held call: which call, where

    def reason(self, preset: Preset) -> str:
        return f"{self.verb} {self.call} at line {self.line}{self.via} ({self.category}; preset {preset})"


@dataclass(frozen=True, slots=True)
class Decision:
    action: GateAction
    reason: str = ""
    line: int | None = None  # the line of the call that held the chunk


RUN = Decision(GateAction.RUN)


@dataclass
class StaticGate:
    """Judges a program's chunks in order, remembering the names its earlier chunks bound."""

    rules: Rules = field(default_factory=Rules)
    _aliases: dict[str, str] = field(default_factory=dict)  # local name -> dotted name it stands for
    _star: list[str] = field(default_factory=list)  # modules imported with `from m import *`
    _marked: dict[str, tuple[int, Hit]] = field(default_factory=dict)  # name -> (its line, the call in its body)

    def __post_init__(self) -> None:
        self._call_rules = self.rules.call_rules()

    def judge(self, code: str, first_line: int) -> Decision:
        """The decision for the chunk `code`, whose first line is `first_line` of the generated program.
        Never raises: a chunk the gate cannot judge (a parse or a walk that fails, where python may still run
        the program) is held, so it runs with the rest of the program once that is complete, as serial would."""
        try:
            return self._judge(code, first_line)
        except Exception as exc:  # noqa: BLE001 - whatever the gate fails on, the session goes on
            return Decision(GateAction.HOLD, f"cannot be judged ({exc.__class__.__name__}: {str(exc)[:200]}; "
                            f"preset {self.rules.preset})", first_line)

    def _judge(self, code: str, first_line: int) -> Decision:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            return Decision(GateAction.HOLD, f"cannot be judged alone ({exc.__class__.__name__}; preset "
                            f"{self.rules.preset})", first_line)
        ast.increment_lineno(tree, first_line - 1)
        immediate: list[Hit] = []
        for statement in tree.body:
            self._bind(statement)
            now, later = self._hits(statement)
            immediate.extend(now)
            self._mark(statement, later)
        if immediate:
            hit = min(immediate, key=lambda h: h.line)
            return Decision(GateAction.HOLD, hit.reason(self.rules.preset), hit.line)
        if tree.body and all(isinstance(s, _DEFINITIONS) for s in tree.body):
            names = ", ".join(s.name for s in tree.body)  # type: ignore[attr-defined]
            return Decision(GateAction.MERGE, f"definition of {names}: runs with the next chunk")
        return RUN

    # --- names ----------------------------------------------------------------------------------

    def _bind(self, statement: ast.stmt) -> None:
        """Record the imports (anywhere in the statement: scopes are ignored, which only holds more)
        and the simple aliases (`run = subprocess.run`) it binds."""
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self._aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self._aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    if alias.name == "*":
                        self._star.append(node.module)
                    else:
                        self._aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        if isinstance(statement, _DEFINITIONS):
            self._aliases.pop(statement.name, None)  # `def remove(...)` is no longer os.remove
        if isinstance(statement, ast.Assign) and isinstance(statement.value, (ast.Name, ast.Attribute)):
            target = self._qualify(statement.value)
            if target is not None:
                for name in statement.targets:
                    if isinstance(name, ast.Name):
                        self._aliases[name.id] = target

    def _qualify(self, node: ast.expr) -> str | None:
        """The dotted name an expression stands for (`sp.run` -> `subprocess.run`), if it is a name."""
        parts = _dotted(node)
        if parts is None:
            return None
        qualified = self._aliases.get(parts[0], parts[0])
        for attr in parts[1:]:
            qualified = f"{qualified}.{attr}"
            qualified = qualified[len("builtins."):] if qualified.startswith("builtins.") else qualified
        return qualified

    def _candidates(self, node: ast.expr) -> list[str]:
        """What a called name may stand for: itself, or, if it is bound by no import, a name from a star import."""
        qualified = self._qualify(node)
        if qualified is None:
            return []
        if isinstance(node, ast.Name) and node.id not in self._aliases and node.id not in _BUILTINS:
            return [qualified, *(f"{module}.{node.id}" for module in self._star)]
        return [qualified]

    # --- calls ----------------------------------------------------------------------------------

    def _hits(self, statement: ast.stmt) -> tuple[list[Hit], list[Hit]]:
        """Held calls the statement makes when it runs, and those it only defines (in function bodies)."""
        now: list[Hit] = []
        later: list[Hit] = []
        # A name is judged once, whole: `sys.stdin.read`, not also its base `sys.stdin`.
        bases = {id(n.value) for n in ast.walk(statement) if isinstance(n, ast.Attribute)}
        for node, deferred in _walk(statement):
            hit = self._judge_node(node, is_base=id(node) in bases)
            if hit is not None:
                (later if deferred else now).append(hit)
        return now, later

    def _judge_node(self, node: ast.AST, is_base: bool) -> Hit | None:
        if isinstance(node, ast.Call):
            return self._judge_call(node)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in self._marked:
            defined, inner = self._marked[node.id]
            return Hit(node.id, node.lineno, inner.category, verb="uses",
                       via=f", defined at line {defined}, which calls {inner.call} at line {inner.line}")
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load) and not is_base:
            qualified = self._qualify(node)
            if qualified is not None and _under(qualified, "sys.stdin"):
                return Hit(_written(node, qualified), node.lineno, STDIN, verb="uses")
        return None

    def _judge_call(self, call: ast.Call) -> Hit | None:
        func = call.func
        for qualified in self._candidates(func):
            for rule in self._call_rules:
                if rule.matches(qualified):
                    return Hit(_written(func, qualified), call.lineno, rule.category)
            if qualified in _OPENERS:
                hit = self._judge_open(call, qualified, *_OPENERS[qualified])
                if hit is not None:
                    return hit
            elif qualified in _WRITERS and self.rules.holds_file_writes:
                return Hit(_written(func, qualified), call.lineno, self.rules.file_category)
        if isinstance(func, ast.Attribute) and not self._is_module(func.value):
            return self._judge_method(call, func)
        return None

    def _is_module(self, node: ast.expr) -> bool:
        """Whether `node` names an imported module (or something imported from one): `webbrowser.open(url)`
        is that module's function, not a file's `.open` method."""
        qualified = self._qualify(node)
        return qualified is not None and any(_under(target, qualified) for target in self._aliases.values())

    def _judge_open(self, call: ast.Call, qualified: str, position: int, default: str) -> Hit | None:
        """An open is a write if its mode writes, appends, creates or updates; a mode not known before
        the code runs is taken as a write. Reading stdin by `open(0)` is reading stdin."""
        written = _written(call.func, qualified)
        if qualified == "open" and call.args and _constant(call.args[0]) == 0:
            return Hit(f"{written}(0)", call.lineno, STDIN)
        if not self.rules.holds_file_writes:
            return None
        mode = _argument(call, position, "mode", default)
        if mode is _UNKNOWN:
            return Hit(f"{written} with a mode not known before it runs", call.lineno, self.rules.file_category)
        if isinstance(mode, str) and _MODE.fullmatch(mode) and set(mode) & set("wax+"):
            return Hit(f"{written}(..., {mode!r})", call.lineno, self.rules.file_category)
        return None

    def _judge_method(self, call: ast.Call, func: ast.Attribute) -> Hit | None:
        """Methods that write files whatever object they are called on: `Path(p).write_text(...)`,
        `df.to_csv(p)`, `fig.savefig(p)`, `Path(p).open("w")`."""
        if not self.rules.holds_file_writes:
            return None
        name = func.attr
        written = f".{name}"
        if name in _WRITES_ONLY_WITH_DESTINATION:
            if call.args or any(k.arg in {"path_or_buf", "buf", None} for k in call.keywords):
                return Hit(written, call.lineno, self.rules.file_category)
            return None
        if name in _WRITER_METHODS or name in _FILE_CHANGE_METHODS:
            return Hit(written, call.lineno, self.rules.file_category)
        if name == "open":
            mode = _argument(call, 0, "mode", "r")
            if mode is _UNKNOWN or (isinstance(mode, str) and _MODE.fullmatch(mode) and set(mode) & set("wax+")):
                return Hit(f"{written}({'...' if mode is _UNKNOWN else repr(mode)})", call.lineno,
                           self.rules.file_category)
        return None

    def _mark(self, statement: ast.stmt, later: list[Hit]) -> None:
        """Names a statement binds carry the held calls of their bodies, so a later use is held too;
        a definition without such calls clears the mark of the name it rebinds."""
        names = _bound_names(statement)
        for name in names:
            if later:
                self._marked[name] = (statement.lineno, min(later, key=lambda h: h.line))
            elif isinstance(statement, _DEFINITIONS):
                self._marked.pop(name, None)


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _Unknown:
    """A mode that is not a constant: only known when the code runs."""


_UNKNOWN = _Unknown()


def _constant(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else _UNKNOWN


def _argument(call: ast.Call, position: int, keyword: str, default: str) -> object:
    """A call's argument by position or keyword; `_UNKNOWN` if it is not a constant or hides behind * or **."""
    if any(isinstance(a, ast.Starred) for a in call.args[:position + 1]) or any(k.arg is None for k in call.keywords):
        return _UNKNOWN
    if len(call.args) > position:
        return _constant(call.args[position])
    for k in call.keywords:
        if k.arg == keyword:
            return _constant(k.value)
    return default


def _dotted(node: ast.expr) -> list[str] | None:
    """The parts of a dotted name (`a.b.c` -> a, b, c), None if `node` is not one; a loop, not recursion:
    a chain may be longer than the interpreter's recursion limit."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return [node.id, *reversed(attrs)] if isinstance(node, ast.Name) else None


def _written(node: ast.expr, qualified: str) -> str:
    """A held name as the program spells it (and what it resolves to), short enough for a reason."""
    written = ".".join(_dotted(node) or ["?"])
    shown = written if written == qualified else f"{written} ({qualified})"
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _walk(root: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, in source order, with whether it runs only later: function bodies run when called,
    while decorators, default values, annotations, base classes and class bodies run when the definition
    does. An explicit stack, not recursion: one line may nest deeper than the recursion limit (a 600-term
    sum, a long `elif` chain) and python still runs it."""
    stack: list[tuple[ast.AST, bool]] = [(root, False)]
    while stack:
        node, deferred = stack.pop()
        yield node, deferred
        stack.extend(reversed(_children(node, deferred)))


def _children(node: ast.AST, deferred: bool) -> list[tuple[ast.AST, bool]]:
    """The nodes `_walk` visits below `node`, in source order, each with whether it runs only later."""
    if isinstance(node, ast.ClassDef):
        return [(child, deferred) for child in (*_decorator_calls(node), *node.bases, *node.keywords, *node.body)]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        now: list[ast.AST] = [*_decorator_calls(node), *node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        now += [a.annotation for a in _arguments(node.args) if a.annotation] + ([node.returns] if node.returns else [])
        return [(child, deferred) for child in now] + [(child, True) for child in node.body]
    if isinstance(node, ast.Lambda):
        now = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        return [(child, deferred) for child in now] + [(node.body, True)]
    return [(child, deferred) for child in ast.iter_child_nodes(node)]


def _decorator_calls(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.expr]:
    """A decorator is called with the definition (`@os.system` calls os.system), so it is judged as a call."""
    return [d if isinstance(d, ast.Call) else ast.Call(d, [], [], lineno=d.lineno, col_offset=d.col_offset)
            for d in node.decorator_list]


def _arguments(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *([args.vararg] if args.vararg else []),
            *([args.kwarg] if args.kwarg else [])]


def _bound_names(statement: ast.stmt) -> list[str]:
    if isinstance(statement, _DEFINITIONS):
        return [statement.name]
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
