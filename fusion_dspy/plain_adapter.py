"""Plain prompts for text tasks: the task as a chat model expects it, the completion as the answer.

DSPy's chat and JSON adapters wrap every call in field lists, ``[[ ## field ## ]]`` markers and
``{placeholder}`` templates. A large model follows them; a small one copies them into its answer
(measured on SmolLM2-135M: most fused answers were ``{answer}``). Chat models are trained on plain
requests, so for signatures whose outputs are text or simple scalars this adapter sends:

- system: the signature's instruction (omitted when it is DSPy's generated "Given the fields ...");
- user: the input values (one input as itself; several as ``Label: value`` blocks);
- for one output field, nothing about format: the whole completion is the answer;
- for several (``reasoning`` + ``answer``), one line asking for the later fields on their own
  lines after ``Label:`` (as OpenAI simple-evals asks for ``Answer:``), parsed from the last match.

Signatures it does not suit (lists, dicts, models, tools) are delegated to a structured adapter
(DSPy's ``ChatAdapter`` by default), so it is safe to set globally:
``dspy.configure(adapter=fd.PlainAdapter())``.
"""

from __future__ import annotations

import json
import re
import typing
from typing import Any, Literal, get_args, get_origin

import dspy
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

_GENERATED_INSTRUCTION = re.compile(r"^\s*Given the fields .*produce the fields .*$", re.S)
_SCALARS = (str, int, float, bool)


def suits_plain(signature: type[dspy.Signature]) -> bool:
    """Whether every output field is text or a simple scalar (so a plain completion can carry it)."""
    if not signature.output_fields:
        return False
    for info in signature.output_fields.values():
        ann = info.annotation
        if ann is typing.Any or ann in _SCALARS or get_origin(ann) is Literal:
            continue
        return False
    for info in signature.input_fields.values():  # tools, histories and images need a structured adapter
        ann = info.annotation
        name = getattr(ann, "__name__", "") or ""
        if name in {"History", "Tool", "Image", "Audio", "ToolCalls"} or "Tool" in str(ann):
            return False
    return True


def field_label(name: str) -> str:
    """``target_language`` -> ``Target language`` (what a person would write)."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def task_instruction(signature: type[dspy.Signature]) -> str:
    """The signature's own instruction, or ``""`` when it is DSPy's generated placeholder."""
    text = (signature.instructions or "").strip()
    return "" if _GENERATED_INSTRUCTION.match(text) else " ".join(text.split())


def render_inputs(signature: type[dspy.Signature], inputs: dict[str, Any]) -> str:
    """The user message: one input as itself; several as ``Label: value`` (long values below the label)."""
    names = [n for n in signature.input_fields if n in inputs]
    if len(names) == 1:
        return _as_text(inputs[names[0]])
    blocks = []
    for name in names:
        value = _as_text(inputs[name])
        label = field_label(name)
        blocks.append(f"{label}:\n{value}" if "\n" in value or len(value) > 80 else f"{label}: {value}")
    return "\n\n".join(blocks)


def render_outputs(signature: type[dspy.Signature], outputs: dict[str, Any]) -> str:
    """An answer written as :class:`PlainAdapter` asks for it (so it parses back to the same fields)."""
    names = list(signature.output_fields)
    if len(names) == 1:
        return _as_text(outputs.get(names[0], ""))
    first, *rest = names
    parts = [_as_text(outputs.get(first, ""))]
    parts += [f"{field_label(n)}: {_as_text(outputs.get(n, ''))}" for n in rest]
    return "\n\n".join(p for p in parts if p.strip())


def format_note(signature: type[dspy.Signature]) -> str:
    """For several output fields: how to lay them out (``""`` for one)."""
    names = list(signature.output_fields)
    if len(names) < 2:
        return ""
    first, *rest = names
    what = "; ".join(f'"{field_label(n)}:" followed by {_describe(signature, n)}' for n in rest)
    return f"Write {_describe(signature, first)} first. Then, each on its own line: {what}."


class PlainAdapter(dspy.Adapter):
    """Plain chat messages in, plain text out, for text and scalar outputs (see the module docstring).

    Args:
        structured: the adapter used for signatures a plain completion cannot carry (default ``ChatAdapter``).
        lenient: when a later field's ``Label:`` line is missing, salvage what can be read (see
            :func:`fusion_dspy.lm.parsing.lenient_parse`: a lone missing answer becomes the whole text)
            instead of failing; ``last_parse`` then says ``"lenient"``.
    """

    def __init__(self, structured: dspy.Adapter | None = None, callbacks: list[Any] | None = None, *, lenient: bool = False):
        super().__init__(callbacks=callbacks)
        self.structured = structured or dspy.ChatAdapter()
        self.lenient = lenient
        self.last_parse = "adapter"

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        if not suits_plain(signature):
            return self.structured(lm, lm_kwargs, signature, demos, inputs)
        return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        if not suits_plain(signature):
            return await self.structured.acall(lm, lm_kwargs, signature, demos, inputs)
        return await super().acall(lm, lm_kwargs, signature, demos, inputs)

    def format(self, signature, demos, inputs):  # type: ignore[override]
        if not suits_plain(signature):
            return self.structured.format(signature, demos, inputs)
        messages: list[dict[str, Any]] = []
        system = "\n\n".join(p for p in (task_instruction(signature), format_note(signature)) if p)
        if system:
            messages.append({"role": "system", "content": system})
        for demo in demos or []:
            if all(n in demo for n in signature.input_fields) and all(n in demo for n in signature.output_fields):
                messages.append({"role": "user", "content": render_inputs(signature, demo)})
                messages.append({"role": "assistant", "content": render_outputs(signature, demo)})
        messages.append({"role": "user", "content": render_inputs(signature, inputs)})
        return messages

    def parse(self, signature, completion):  # type: ignore[override]
        if not suits_plain(signature):
            return self.structured.parse(signature, completion)
        try:
            values = parse_plain(signature, completion, adapter_name=type(self).__name__)
            self.last_parse = "adapter"
            return values
        except AdapterParseError:
            if not self.lenient:
                raise
            from fusion_dspy.lm.parsing import lenient_parse

            try:
                values = lenient_parse(signature, completion, optional=("reasoning",))
            except ValueError:
                raise AdapterParseError(
                    adapter_name=type(self).__name__, signature=signature, lm_response=completion, message="no field could be read"
                ) from None
            self.last_parse = "lenient"
            return values


def parse_plain(signature: type[dspy.Signature], completion: str, *, adapter_name: str = "PlainAdapter") -> dict[str, Any]:
    """Read a plain completion back into the output fields.

    One field: the whole (stripped) completion. Several: each later field from the *last* line that
    starts with its label (``Answer:``, also ``**Answer:**``); the text before the first label found
    is the first field. A missing later field raises ``AdapterParseError``.
    """
    text = (completion or "").strip()
    names = list(signature.output_fields)
    if not text:
        raise AdapterParseError(adapter_name=adapter_name, signature=signature, lm_response=completion, message="empty completion")
    if len(names) == 1:
        return {names[0]: _coerce(signature, names[0], text, adapter_name, completion)}
    first, *rest = names
    found: dict[str, tuple[int, int]] = {}  # field -> (start of label, start of value)
    for name in rest:
        pattern = re.compile(rf"^[ \t>#*_-]*{re.escape(field_label(name))}[*_]*[ \t]*[:：][*_]*[ \t]*", re.I | re.M)
        matches = list(pattern.finditer(text))
        if matches:
            found[name] = (matches[-1].start(), matches[-1].end())
    missing = [n for n in rest if n not in found]
    if missing:
        raise AdapterParseError(
            adapter_name=adapter_name, signature=signature, lm_response=completion,
            message=f"no line starting with {field_label(missing[0])!r}:",
        )
    starts = sorted((pos[0], name) for name, pos in found.items())
    values: dict[str, Any] = {first: text[: starts[0][0]].strip()}
    for k, (_, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        values[name] = text[found[name][1] : end].strip()
    return {n: _coerce(signature, n, values.get(n, ""), adapter_name, completion) for n in names}


def _coerce(signature, name: str, value: str, adapter_name: str, completion: str) -> Any:
    ann = signature.output_fields[name].annotation
    if ann is str or ann is typing.Any:
        return value
    try:
        return parse_value(value, ann)
    except Exception as exc:  # noqa: BLE001 - any failure to read a scalar is a parse error
        if ann in (int, float):
            num = re.findall(r"-?\d+(?:\.\d+)?", value.replace(",", ""))
            if num:
                return ann(float(num[-1])) if ann is int else float(num[-1])
        raise AdapterParseError(
            adapter_name=adapter_name, signature=signature, lm_response=completion,
            message=f"field {name!r}: cannot read {value[:60]!r} as {getattr(ann, '__name__', ann)}: {exc}",
        ) from exc


def _describe(signature: type[dspy.Signature], name: str) -> str:
    info = signature.output_fields[name]
    desc = (info.json_schema_extra or {}).get("desc") or ""
    if not desc or desc.startswith("${"):
        desc = field_label(name).lower()
    if get_origin(info.annotation) is Literal:
        desc += " (one of: " + ", ".join(str(a) for a in get_args(info.annotation)) + ")"
    return f"the {desc}" if not desc.lower().startswith(("the ", "a ", "an ", "one ")) else desc


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
