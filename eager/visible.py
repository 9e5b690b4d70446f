"""Text from a program or a model made safe to show on a terminal: every control character visible, none obeyed.

The human view of `eager run` prints what generated code prints, the model's answer and error tracebacks.
A terminal obeys the control characters in them: a program could clear the screen, retitle the window,
write the clipboard (OSC 52) or rewrite what the user already read (\\r, bidi overrides). So each control
character (C0 but newline and tab, DEL, C1 such as U+009B CSI) and each bidi control is shown as its Python
escape (ESC as `\\x1b`). `--json` is the exact text: JSON escapes them in its own way.
"""

from __future__ import annotations

_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {
    point: f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"
    for point in [*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI]
    if chr(point) not in "\n\t"
} | {ord("\r"): "\\r"}


def visible(text: str) -> str:
    """`text` with every control character but newline and tab shown as its escape (`\\x1b`, `\\r`, `\\u202e`)."""
    return text.translate(_ESCAPES)
