"""An answer's tool calls, piece by piece, in; the program (the code tool's code, calls joined in order) out.

Pure: the producer shell turns chat `delta.tool_calls[]` pieces and Responses events into `start` and
`piece` calls and publishes what they return as the detector's text. Chat pieces of one call share an
`index`; some servers reuse index 0 for the next call, and some change the id mid-call, so a piece at the
same index starts a new call only when it names a function after its call already has arguments under
another id. Calls stream one after the other: a piece for an earlier call after a later one began cannot be
published in order, and is an error. Calls of any other tool are kept for the report, never run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eager.common.protocol import CodeTool, ToolCall, ToolShape
from eager.producer.tool_args import ArgumentDecoder, CodeDecoder, RawInput, ToolArgumentsError


@dataclass
class _Call:
    key: int
    index: int
    name: str | None = None
    call_id: str | None = None
    parts: list[str] = field(default_factory=list)
    decoder: CodeDecoder | None = None


class ToolCallStream:
    def __init__(self, tool: CodeTool) -> None:
        self.tool = tool
        self._calls: list[_Call] = []
        self._program_ends_line = True  # the code so far is empty or ends with a line end

    @property
    def calls(self) -> int:
        return len(self._calls)

    def start(self, key: int, name: str | None, call_id: str | None) -> str:
        """A call begins (Responses `output_item.added`, or a chat piece opening one): code to publish."""
        self._calls.append(_Call(key, len(self._calls), call_id=call_id))
        return self._name(self._calls[-1], name)

    def piece(self, key: int, arguments: str, name: str | None = None, call_id: str | None = None) -> str:
        """One piece of the call at `key` (a chat `index`, a Responses `output_index`): code to publish."""
        current = self._calls[-1] if self._calls else None
        if current is not None and current.key == key and not (name and current.parts and call_id != current.call_id):
            current.call_id = current.call_id or call_id
            code = self._name(current, name)
        else:
            if not name and any(c.key == key for c in self._calls):
                raise ToolArgumentsError(f"a piece of tool call {key} came after a later call began: "
                                         "interleaved calls cannot run in order")
            code = self.start(key, name, call_id)
            current = self._calls[-1]
        current.parts.append(arguments)
        if current.decoder is not None and arguments:
            code += self._code(current.decoder.feed(arguments))
        return code

    def complete(self, key: int, text: str) -> None:
        """The call at `key` as the API restates it when it is done (Responses `output_item.done`): a code call's
        pieces must be exactly that text, or what ran is not what the model called with."""
        call = next((c for c in reversed(self._calls) if c.key == key), None)
        if call is None or call.decoder is None:
            return
        streamed = "".join(call.parts)
        if streamed != text:
            raise ToolArgumentsError(f"the call's complete {'input' if self.tool.shape is ToolShape.CUSTOM else 'arguments'}"
                                     f" ({len(text)} characters) differ from the pieces streamed ({len(streamed)} "
                                     "characters), which ran")

    def finish(self, cut: bool, limit: bool = False) -> tuple[list[ToolCall], str | None]:
        """Every call for the report, and the first error: a code call whose complete arguments are not
        the code that ran. `cut`: generation was cancelled, so an unfinished last call is expected.
        `limit`: the model stopped at its token limit, so a code call it was writing may be cut anywhere,
        even where its code still parses (a custom tool's input has no closing quote to tell)."""
        last = self._calls[-1] if self._calls else None
        if limit and not cut and last is not None and last.decoder is not None and (
                isinstance(last.decoder, RawInput) or not last.decoder.closed):
            return self._report(), (f"tool call {last.index} ({last.name}): the model reached its token limit "
                                    "inside the call: its code may be cut, so its last statement did not run")
        error = None
        for call in self._calls:
            if call.decoder is None or error is not None or (cut and call is self._calls[-1]):
                continue
            try:
                call.decoder.finish()
            except ToolArgumentsError as exc:
                error = f"tool call {call.index} ({call.name}): {exc}"
        return self._report(), error

    def _report(self) -> list[ToolCall]:
        return [ToolCall(c.index, c.name or "", "".join(c.parts), c.call_id, c.decoder is not None)
                for c in self._calls]

    def _name(self, call: _Call, name: str | None) -> str:
        """Name the call; a call of the code tool starts decoding (and, after earlier code, a new line)."""
        if not name or call.name:
            return ""
        call.name = name
        if name != self.tool.name:
            return ""
        call.decoder = RawInput() if self.tool.shape is ToolShape.CUSTOM else ArgumentDecoder(self.tool.argument)
        code = "" if self._program_ends_line else "\n"
        self._program_ends_line = True
        if call.parts:
            code += self._code(call.decoder.feed("".join(call.parts)))
        return code

    def _code(self, code: str) -> str:
        if code:
            self._program_ends_line = code.endswith(("\n", "\r"))
        return code
