"""Getting structured fields out of small models: JSON-schema decoding and lenient parsing.

Tiny local models often break DSPy's output format. Two things help, measured on SmolLM2-135M:
constrained decoding with a JSON schema (llama.cpp and vLLM honour ``response_format`` through
LiteLLM) with *bounded* string lengths, so the model cannot ramble past ``max_tokens``; and a
lenient parser that salvages what a strict parser rejects (truncated JSON, DSPy field markers,
``[[...]]`` answers, a bare answer for a single-field signature).
"""

from __future__ import annotations

import json
import logging
import re
import typing
from typing import Any, Literal, get_args, get_origin

import dspy
from dspy.adapters.json_adapter import JSONAdapter
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.0  # conservative: fewer characters per token than English prose averages
_MARKER = re.compile(r"\[\[\s*##\s*(\w+)\s*##\s*\]\]")
_BRACKETS = re.compile(r"\[\[(.+?)\]\]", re.S)


def field_char_limits(signature: type[dspy.Signature], max_tokens: int | None, *, short_fields: dict[str, float] | None = None) -> dict[str, int]:
    """Split a completion budget of ``max_tokens`` into character limits per string output field.

    ``short_fields`` maps field names to the share of the budget they get (e.g. the comparison 0.3);
    the remaining share is split evenly between the other string fields. JSON punctuation and
    non-string fields are allowed for by keeping 15% of the budget free.
    """
    budget = int((max_tokens or 1024) * CHARS_PER_TOKEN * 0.85)
    short_fields = short_fields or {}
    names = [n for n, f in signature.output_fields.items() if _is_str(f.annotation)]
    limits = {n: max(40, int(budget * share)) for n, share in short_fields.items() if n in names}
    rest = [n for n in names if n not in limits]
    left = max(80, budget - sum(limits.values()))
    for n in rest:
        limits[n] = max(40, left // max(1, len(rest)))
    return limits


def _is_str(annotation: Any) -> bool:
    return annotation is str or annotation is typing.Any


def json_schema_for(
    signature: type[dspy.Signature], char_limits: dict[str, int] | None = None, enums: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """A JSON schema for a signature's output fields with bounded string lengths.

    ``enums`` restricts string fields to a fixed set of values (a judge's verdict labels) while the
    signature keeps them ``str``, so other adapters still accept looser spellings.
    """
    props: dict[str, Any] = {}
    for name, info in signature.output_fields.items():
        if enums and name in enums:
            props[name] = {"type": "string", "enum": list(enums[name])}
            continue
        props[name] = _schema_for_annotation(info.annotation, (char_limits or {}).get(name))
        extra = info.json_schema_extra or {}
        if name == "score" and props[name].get("type") == "integer":
            props[name].update({"minimum": extra.get("ge", 1), "maximum": extra.get("le", 5)})
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _schema_for_annotation(annotation: Any, max_chars: int | None) -> dict[str, Any]:
    if _is_str(annotation):
        out: dict[str, Any] = {"type": "string"}
        if max_chars:
            out["maxLength"] = int(max_chars)
        return out
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if get_origin(annotation) is Literal:
        return {"enum": list(get_args(annotation))}
    try:
        import pydantic

        return pydantic.TypeAdapter(annotation).json_schema()
    except Exception:  # noqa: BLE001 - any type pydantic cannot describe: leave it free
        return {}


def response_format_for(
    signature: type[dspy.Signature], char_limits: dict[str, int] | None = None, enums: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The OpenAI ``response_format`` asking for JSON that matches the signature's outputs."""
    schema = json_schema_for(signature, char_limits, enums)
    return {"type": "json_schema", "json_schema": {"name": signature.__name__ or "output", "schema": schema, "strict": True}}


def lenient_parse(signature: type[dspy.Signature], text: str, *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Salvage the output fields from ``text``; raise ``ValueError`` if a required field is missing.

    Tries, in order: (possibly truncated) JSON, DSPy ``[[ ## field ## ]]`` markers, ``field: value``
    lines; then, if exactly one required field is still missing, ``[[answer]]`` or the whole text.
    ``optional`` fields (comparisons, analyses) default to ``""`` when absent.
    """
    fields = signature.output_fields
    found: dict[str, Any] = {}
    text = text or ""
    candidates = [_from_json(text), _from_markers(text, fields), _from_labels(text, fields)]
    for values in candidates:
        for k, v in values.items():
            if k in fields and k not in found and v not in (None, ""):
                found[k] = v
    missing = [n for n in fields if n not in found and n not in optional]
    if len(missing) == 1 and not found.get(missing[0]):
        m = _BRACKETS.findall(text)
        if m:
            found[missing[0]] = m[-1].strip()
        elif len([n for n in fields if n not in optional]) == 1 and _strip_markers(text).strip():
            found[missing[0]] = _strip_markers(text).strip()
    out: dict[str, Any] = {}
    for name, info in fields.items():
        if name not in found:
            if name in optional:
                out[name] = "" if _is_str(info.annotation) else None
                continue
            raise ValueError(f"field {name!r} not found in the output")
        value = found[name]
        try:
            out[name] = value if (_is_str(info.annotation) and isinstance(value, str)) else parse_value(
                value if not isinstance(value, str) else value.strip(), info.annotation
            )
        except Exception as exc:  # noqa: BLE001 - any parse failure of a field value
            if info.annotation is int and isinstance(value, str):
                num = re.search(r"-?\d+", value)
                if num:
                    out[name] = int(num.group())
                    continue
            raise ValueError(f"field {name!r}: cannot read {str(value)[:80]!r} as {info.annotation}: {exc}") from exc
    return out


def _from_json(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except (json.JSONDecodeError, ValueError):
        pass
    try:
        import json_repair

        value = json_repair.loads(text[start:])
    except Exception:  # noqa: BLE001 - json_repair may raise anything on garbage
        return {}
    return value if isinstance(value, dict) else {}


def _from_markers(text: str, fields: dict[str, Any]) -> dict[str, Any]:
    parts = _MARKER.split(text)
    out = {}
    for i in range(1, len(parts) - 1, 2):
        name, value = parts[i], parts[i + 1].strip()
        if name in fields and value:
            out[name] = value
    return out


def _from_labels(text: str, fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    names = "|".join(re.escape(n) for n in fields)
    pattern = re.compile(rf"^\s*\**({names})\**\s*:\s*(.*?)(?=^\s*\**(?:{names})\**\s*:|\Z)", re.S | re.M | re.I)
    for m in pattern.finditer(text):
        out.setdefault(m.group(1).lower(), m.group(2).strip())
    return {k: v for k, v in out.items() if k in fields}


def _strip_markers(text: str) -> str:
    return _MARKER.sub("", text).replace("[[ ## completed ## ]]", "")


class SchemaAdapter(JSONAdapter):
    """DSPy's JSONAdapter with our bounded JSON schema and a lenient parse.

    Args:
        char_limits: maximum characters per string output field (keeps small models from rambling).
        optional: output fields allowed to be missing (filled with "").
        use_schema: send ``response_format`` with the schema (constrained decoding).
        enums: string output fields restricted to these values in the schema.
    """

    def __init__(
        self,
        char_limits: dict[str, int] | None = None,
        *,
        optional: tuple[str, ...] = (),
        use_schema: bool = True,
        enums: dict[str, list[str]] | None = None,
    ):
        super().__init__(use_native_function_calling=False)
        self.char_limits = dict(char_limits or {})
        self.optional = tuple(optional)
        self.use_schema = use_schema
        self.enums = dict(enums or {})
        self.last_parse = "adapter"

    def _prepare_response_format(self, lm, lm_kwargs, signature):
        if self.use_schema and "response_format" not in lm_kwargs:
            lm_kwargs["response_format"] = response_format_for(signature, self.char_limits, self.enums)

    def parse(self, signature, completion):
        try:
            value = super().parse(signature, completion)
            self.last_parse = "adapter"
            return value
        except AdapterParseError as strict_error:
            try:
                value = lenient_parse(signature, completion, optional=self.optional)
            except ValueError:
                raise strict_error from None
            self.last_parse = "lenient"
            logger.info("parsed %s leniently", signature.__name__)
            return value
