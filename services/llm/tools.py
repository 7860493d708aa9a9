"""Tool calling in chat: the tools shown to the model, the grammar a call follows, and calls read from its output."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aisemble.errors import FieldViolation
from services.llm.structured import check_format
from services.llm.types import OutputFormat, Tool, ToolCall

__all__ = ["MAX_TOOLS", "ToolCallParser", "check_tools", "tool_format", "tools_prompt"]

MAX_TOOLS = 64
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: How a call is written (and enforced): {"name": "<tool>", "arguments": {...}}, nothing else.
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"(?P<name>[A-Za-z0-9_-]+)"\s*,\s*"arguments"\s*:\s*')


def check_tools(tools: Sequence[Tool], choice: str) -> list[FieldViolation]:
    """Names (unique, the allowed characters), parameters (a JSON object schema) and the named choice."""
    violations: list[FieldViolation] = []
    if len(tools) > MAX_TOOLS:
        violations.append(FieldViolation("tools", f"{len(tools)} tools; at most {MAX_TOOLS}"))
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not _NAME.fullmatch(tool.name):
            violations.append(FieldViolation(f"tools[{index}].name", "must be 1 to 64 letters, digits, '_' or '-'"))
        elif tool.name in seen:
            violations.append(FieldViolation(f"tools[{index}].name", f"'{tool.name}' is given twice"))
        seen.add(tool.name)
        problems = check_format(OutputFormat("json_schema", tool.parameters))
        violations += [FieldViolation(f"tools[{index}].parameters", p.description) for p in problems]
        if not problems and json.loads(tool.parameters).get("type", "object") != "object":
            violations.append(FieldViolation(f"tools[{index}].parameters", "must be the schema of an object"))
    if choice not in ("auto", "none", "required") and choice not in seen:
        violations.append(FieldViolation("tool_choice.name", f"'{choice}' is not one of the request's tools"))
    if choice == "required" and not tools:
        violations.append(FieldViolation("tool_choice", "REQUIRED needs at least one tool"))
    return violations


def _call_schema(tool: Tool) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": json.loads(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_format(tools: Sequence[Tool], choice: str) -> OutputFormat | None:
    """The grammar of the answer: a call of the named tool, of any tool (required), a call or text that does not
    start with '{' (auto); None when the tools are not offered."""
    offered = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    if choice == "none" or not offered:
        return None
    schemas = [_call_schema(t) for t in offered]
    call = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if choice != "auto":
        return OutputFormat("json_schema", json.dumps(call))
    grammar = f"start: call | text\ncall: %json {json.dumps(call)}\ntext: /[^{{\\s][\\s\\S]*/\n"
    return OutputFormat("lark", grammar)


def tools_prompt(tools: Sequence[Tool], choice: str) -> str:
    """The system prompt text that shows the tools to a model whose chat template has no place for them."""
    offered = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    listing = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": json.loads(t.parameters)})
        for t in offered
    )
    must = "You must call one of them." if choice != "auto" else "Call one only when it helps; else answer in text."
    return (
        "You can call these functions. To call one, answer with only a JSON object "
        '{"name": <the function\'s name>, "arguments": <its arguments>}. '
        f"{must}\nFunctions:\n{listing}"
    )


@dataclass
class ToolCallDelta:
    """A piece of a call being generated: the first has the id and name, later ones add to the arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ToolCallParser:
    """Reads the model's output as it streams: a call (it starts with '{', as the grammar allows only then) becomes
    ToolCallDeltas, id and name first, then the arguments' text as it comes (the call's closing brace held back);
    anything else is text and passes through."""

    text: str = ""
    is_call: bool | None = None  # None: not known yet (only whitespace so far)
    call_id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    _head_end: int = -1
    _sent: int = 0  # characters of the arguments sent

    def feed(self, delta: str) -> tuple[str, list[ToolCallDelta]]:
        """Text to send as text, and call pieces to send."""
        self.text += delta
        if self.is_call is None:
            stripped = self.text.lstrip()
            if not stripped:
                return "", []
            self.is_call = stripped.startswith("{")
            if not self.is_call:
                return self.text, []
        if not self.is_call:
            return delta, []
        pieces: list[ToolCallDelta] = []
        if self._head_end < 0:
            head = _CALL_HEAD.match(self.text)
            if head is None:
                return "", []
            self._head_end = head.end()
            pieces.append(ToolCallDelta(0, self.call_id, head["name"]))
        body = self.text[self._head_end :].strip()
        ready = body[:-1] if body.endswith("}") else body  # the last '}' may close the call, not the arguments
        if len(ready) > self._sent:
            pieces.append(ToolCallDelta(0, arguments=ready[self._sent :]))
            self._sent = len(ready)
        return "", pieces

    def finish(self) -> tuple[ToolCall | None, list[ToolCallDelta]]:
        """The whole call (None for a text answer, or an incomplete call) and the last piece of its arguments."""
        if not self.is_call:
            return None, []
        try:
            parsed = json.loads(self.text)
            name, arguments = parsed["name"], parsed["arguments"]
        except (ValueError, KeyError, TypeError):
            return None, []
        body = self.text[self._head_end :].strip()
        raw = body[:-1].rstrip() if body.endswith("}") else json.dumps(arguments)
        rest = [ToolCallDelta(0, arguments=raw[self._sent :])] if len(raw) > self._sent else []
        self._sent = len(raw)
        return ToolCall(self.call_id, str(name), raw), rest
