"""smolagents' CodeAgent with its code run by Eager: each step's code runs while the model is still writing it,
and every step runs in one persistent, sandboxed interpreter (the optional `smolagents` extra).

A CodeAgent calls its model, parses the code out of the answer, then hands it to its python executor. Here the
model call (`EagerModel`) is one turn of an Eager conversation: the answer streams back to the agent while Eager's
executor already runs each finished statement, and stops the model at the first error. The agent's executor
(`EagerExecutor`) therefore runs nothing: it waits for that turn's end and reports it the way smolagents' local
executor would (printed output as logs, the error for the agent to repair, the final answer). `eager_code_agent`
wires the two together.

What differs from smolagents' local executor, and why:
- Tools: only `final_answer`. Agent tools are Python objects in the host process and cannot be called from the
  sandbox, so any other tool (or managed agent, or `additional_args` variables) is refused with a ValueError.
  `final_answer(answer)` is defined in the interpreter by the conversation's setup code: it ends the step by
  raising SystemExit carrying the answer as JSON (what JSON cannot carry arrives as its repr()).
- The code that runs is plain Python in Eager's sandbox: any module installed in the interpreter's environment
  imports (`additional_authorized_imports` only shapes the prompt), and the sandbox's limits apply instead of
  smolagents' operation counts. A bare expression's value is not returned: print what the next step needs.
- What ran is what Eager's detector read from the answer's code fences, while the agent's memory shows the code
  smolagents parsed itself (`code_block_tags="markdown"`, so both read ```python fences). They differ only when
  Eager stopped the model at an error (the memory shows the answer up to the cut: nothing after the failing
  statement ran), when an answer has bare ``` blocks (Eager runs them, smolagents does not read them: with no
  ```python block beside them, the agent is told it wrote no code), when the code assigns to `final_answer`
  (smolagents rewrites that; Eager runs it as written), or when the answer has no fence at all (smolagents may
  take the whole text as code; Eager runs nothing, and the agent is told to use a fence).
- Every model call is a turn. Only an action step's runs its code: smolagents asks for those with the stop
  sequence "Observation:". A plan (`planning_interval`) or the summary smolagents asks for at `max_steps` is a
  turn that only talks (`execute=False`): its answer streams back, and no code in it runs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import PIL.Image
from smolagents import CodeAgent, FinalAnswerTool, Model, Tool
from smolagents.memory import ActionStep
from smolagents.local_python_executor import DEFAULT_MAX_LEN_OUTPUT, CodeOutput, InterpreterError, PythonExecutor
from smolagents.models import (
    ChatMessage,
    ChatMessageStreamDelta,
    MessageRole,
    agglomerate_stream_deltas,
    get_clean_message_list,
    tool_role_conversions,
)
from smolagents.monitoring import TokenUsage
from smolagents.utils import truncate_content

from eager.common.config import Settings
from eager.common.protocol import Delta, Figure, FinishReason, GenerationEnd, Message, SessionStarted, SessionStatus, Summary
from eager.client import Client, Conversation, ConversationClosed, Session

__all__ = ["FINAL_ANSWER_MARK", "SETUP", "EagerExecutor", "EagerModel", "eager_code_agent"]

FINAL_ANSWER_MARK = "eager-smolagents-final-answer:"
ACTION_STOP = "Observation:"  # CodeAgent stops its action steps' answers here, and only those

# Run in every fresh interpreter of the conversation, before the first step's code.
SETUP = f'''
def final_answer(answer):
    """Ends the task with `answer` (smolagents' final_answer tool, inside Eager's sandbox)."""
    import json
    try:
        payload = json.dumps(answer, default=repr)
    except (TypeError, ValueError):  # keys JSON cannot name, cycles
        payload = json.dumps(repr(answer))
    raise SystemExit({FINAL_ANSWER_MARK!r} + payload)
'''

FRESH_INTERPRETER = ("(This step ran in a fresh interpreter: the previous one is gone, with every name that "
                     "earlier steps defined.)\n")


class Turn:
    """One model call's session, read in two parts: the answer (up to the end of generation) for the model, then
    the rest (execution goes on after the answer ends) up to the Summary for the executor."""

    def __init__(self, session: Session, fresh_matters: bool) -> None:
        self.session = session
        self._events = session.events()
        self._fresh_matters = fresh_matters  # earlier turns defined names the agent may count on
        self.started: SessionStarted | None = None
        self.figures: list[PIL.Image.Image] = []

    def answer(self) -> Iterator[ChatMessageStreamDelta]:
        for event in self._read():
            if isinstance(event, Delta):
                yield ChatMessageStreamDelta(content=event.text)
            elif isinstance(event, GenerationEnd):
                if event.finish_reason is FinishReason.ERROR:
                    raise RuntimeError(f"the model failed: {event.error}")
                if event.usage:
                    yield ChatMessageStreamDelta(content="", token_usage=TokenUsage(
                        input_tokens=event.usage.get("prompt_tokens") or 0,
                        output_tokens=event.usage.get("completion_tokens") or 0))
                return

    def result(self) -> tuple[Summary, bool]:
        """The turn's Summary, and whether its interpreter was a fresh one where the agent expected its names."""
        for _ in self._read():
            pass
        assert self.session.summary is not None
        fresh = self._fresh_matters and self.started is not None and not self.started.kept_state
        return self.session.summary, fresh

    def _read(self) -> Iterator[Message]:
        for event in self._events:
            if isinstance(event, SessionStarted):
                self.started = event
            elif isinstance(event, Figure):
                image = PIL.Image.open(io.BytesIO(event.image()))
                image.load()
                self.figures.append(image)
            yield event


class EagerModel(Model):
    """A smolagents Model whose every call is one turn of an Eager conversation: the answer streams back while its
    code already runs in the conversation's interpreter. `EagerExecutor` reports what that code did.

    The conversation opens at the first call. It keeps one interpreter for `max_turns` calls at most, and while no
    more than `EAGER_TURN_IDLE_S` pass between calls; past either, the next call opens a new conversation, whose
    fresh interpreter the agent is told about."""

    def __init__(self, client: Client | Settings | None = None, *, model: str | None = None, gate: str = "eager",
                 max_turns: int = 10, max_tokens: int | None = None, temperature: float | None = None) -> None:
        self.client = client if isinstance(client, Client) else Client(client)
        self._owns_client = not isinstance(client, Client)
        super().__init__(model_id=model or self.client.settings.model)
        self.gate = gate
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.conversation: Conversation | None = None
        self.sessions: list[Session] = []  # every turn, across conversations
        self._turn: Turn | None = None

    def generate(self, messages: list[ChatMessage | dict], stop_sequences: list[str] | None = None,
                 response_format: dict[str, str] | None = None, tools_to_call_from: list[Tool] | None = None,
                 **kwargs: Any) -> ChatMessage:
        deltas = list(self.generate_stream(messages, stop_sequences, response_format, tools_to_call_from, **kwargs))
        return agglomerate_stream_deltas(deltas)

    def generate_stream(self, messages: list[ChatMessage | dict], stop_sequences: list[str] | None = None,
                        response_format: dict[str, str] | None = None, tools_to_call_from: list[Tool] | None = None,
                        **kwargs: Any) -> Iterator[ChatMessageStreamDelta]:
        if response_format is not None or tools_to_call_from or kwargs:
            raise ValueError("EagerModel sends the model only messages and stop sequences: structured outputs and "
                             "tool calling do not apply (Eager runs the code in the answer's ```python fences)")
        action = ACTION_STOP in (stop_sequences or [])  # a plan or a final summary only talks
        self._turn = Turn(self._send(_as_chat(messages), stop_sequences or None, action),
                          fresh_matters=bool(self.sessions))
        self.sessions.append(self._turn.session)
        yield from self._turn.answer()

    def _send(self, messages: list[dict[str, Any]], stop: list[str] | None, execute: bool) -> Session:
        if self.conversation is not None:
            try:
                return self.conversation.send(messages=messages, stop=stop, execute=execute)
            except ConversationClosed:
                self.conversation.close()
        self.conversation = self.client.conversation(
            model=self.model_id, gate=self.gate, max_turns=self.max_turns, setup=SETUP, max_tokens=self.max_tokens,
            temperature=self.temperature)
        return self.conversation.send(messages=messages, stop=stop, execute=execute)

    def take_turn(self) -> Turn:
        """The last call's turn, once: each answer's code is reported once."""
        if self._turn is None:
            raise InterpreterError("no Eager turn to report: EagerExecutor reports the code of EagerModel's "
                                   "last answer, which already ran (or was already reported)")
        turn, self._turn = self._turn, None
        return turn

    def close(self) -> None:
        """End the conversation (the executor frees its interpreter), and the client if this model made it."""
        if self.conversation is not None:
            self.conversation.close()
        if self._owns_client:
            self.client.close()


class EagerExecutor(PythonExecutor):
    """The agent's python executor: reports the step whose code Eager already ran while the model wrote it."""

    def __init__(self, model: EagerModel) -> None:
        self.model = model
        self.state: dict[str, str] = {"_print_outputs": ""}  # CodeAgent shows these logs next to a step's error
        self.figures: list[PIL.Image.Image] = []  # what the last step's code showed

    def attach_figures(self, memory_step: ActionStep, agent: Any = None) -> None:
        """A step callback: the figures the step's code showed become its observation images, as smolagents
        hands a browser's screenshots to the model."""
        if self.figures:
            memory_step.observations_images, self.figures = self.figures, []

    def __call__(self, code_action: str) -> CodeOutput:
        turn = self.model.take_turn()
        summary, fresh = turn.result()
        self.figures = turn.figures
        logs = (FRESH_INTERPRETER if fresh else "") + truncate_content(summary.stdout, DEFAULT_MAX_LEN_OUTPUT)
        self.state["_print_outputs"] = logs
        error = summary.error or {}
        if summary.status is SessionStatus.OK:
            return CodeOutput(output=None, logs=logs, is_final_answer=False)
        if summary.status is SessionStatus.EXITED and error.get("message", "").startswith(FINAL_ANSWER_MARK):
            return CodeOutput(output=json.loads(error["message"][len(FINAL_ANSWER_MARK):]), logs=logs,
                              is_final_answer=True)
        if summary.status is SessionStatus.NO_CODE:
            raise InterpreterError("Nothing ran: Eager runs only the code in ```python fences, and the answer had "
                                   "none")
        if error:
            cut = ("\nYour answer was cut at this error: nothing after it ran."
                   if summary.finish_reason == FinishReason.CANCELLED else "")
            detail = error["traceback"].rstrip() or f"{error['type']}: {error['message']}"
            raise InterpreterError(f"Code execution failed at line {error['line']}:\n{detail}{cut}")
        raise InterpreterError(f"Code execution ended `{summary.status}`: {summary.detail}")

    def send_tools(self, tools: dict[str, Tool]) -> None:
        others = sorted(name for name, tool in tools.items()
                        if name != "final_answer" or type(tool) is not FinalAnswerTool)
        if others:
            raise ValueError(f"Eager's sandbox cannot call tools that live in this process: {others}. An Eager-run "
                             "CodeAgent takes no tools besides the default final_answer, and no managed agents")

    def send_variables(self, variables: dict[str, Any]) -> None:
        if variables:
            raise ValueError(f"Eager's sandbox cannot receive this process's variables {sorted(variables)}: "
                             "pass data in the task text, or let the agent's code load it")

    def cleanup(self) -> None:
        self.model.close()


def eager_code_agent(client: Client | Settings | None = None, *, model: str | None = None, gate: str = "eager",
                     max_turns: int | None = None, max_tokens: int | None = None, temperature: float | None = None,
                     **agent_kwargs: Any) -> CodeAgent:
    """A CodeAgent whose steps run through Eager, in one interpreter. `client`: a Client, or Settings (default:
    from the environment) for a client the agent owns; `model`: the model name at Eager's endpoint; `max_turns`:
    model calls one interpreter serves (default: one run: max_steps, their plans, and a final summary). Other arguments go to CodeAgent.
    Use it as a context manager (or call `cleanup()`) to free the interpreter."""
    if agent_kwargs.setdefault("code_block_tags", "markdown") != "markdown":
        raise ValueError("Eager reads markdown code fences: code_block_tags must be 'markdown'")
    eager_model = EagerModel(client, model=model, gate=gate, max_tokens=max_tokens, temperature=temperature)
    executor = EagerExecutor(eager_model)
    try:
        agent = CodeAgent(model=eager_model, executor=executor, **{"tools": [], **agent_kwargs})
        executor.send_tools({**agent.tools, **agent.managed_agents})  # refuse unusable tools now, not at run()
        agent.step_callbacks.register(ActionStep, executor.attach_figures)
    except BaseException:
        eager_model.close()
        raise
    plans = -(-agent.max_steps // agent.planning_interval) if agent.planning_interval else 0
    eager_model.max_turns = max_turns or agent.max_steps + plans + 1  # the steps, their plans, a final summary
    return agent


def _as_chat(messages: list[ChatMessage | dict]) -> list[dict[str, Any]]:
    """smolagents' chat (tool roles, lists of content parts) as an Eager request carries it: text as a string,
    and the figures of earlier steps as OpenAI image parts (a vision model sees them; a text model's endpoint
    may refuse them)."""
    chat: list[dict[str, Any]] = []
    for message in get_clean_message_list(messages, role_conversions=tool_role_conversions,
                                          convert_images_to_image_urls=True):
        parts = message["content"] if isinstance(message["content"], list) else [
            {"type": "text", "text": message["content"] or ""}]
        role = MessageRole(message["role"]).value
        if all(part["type"] == "text" for part in parts):
            chat.append({"role": role, "content": "\n".join(part["text"] for part in parts)})
        else:
            chat.append({"role": role, "content": [part for part in parts if part["type"] in ("text", "image_url")]})
    return chat
