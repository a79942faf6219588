"""Checks on a canonical chat request, with messages that say what to change."""

from __future__ import annotations

from typing import Any

from zeroserve.errors import BadRequest

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


class InvalidRequest(BadRequest):
    code = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def check_chat(body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: required, the name of a model from GET /v1/models", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages: required, a non-empty list of {role, content} objects", "messages"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role: must be one of {', '.join(sorted(ROLES))}",
                f"messages[{i}].role",
            )
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidRequest(
                f"messages[{i}].content: must be a string or a list of content parts",
                f"messages[{i}].content",
            )
        if content is None and m["role"] in ("user", "system"):
            raise InvalidRequest(
                f"messages[{i}].content: required for {m['role']} messages",
                f"messages[{i}].content",
            )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidRequest(f"{name}: must be a positive integer", name)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest(
                "tools: must be a list of {type: function, function: {...}}", "tools"
            )
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise InvalidRequest(
                    f"tools[{i}].function.name: required, the function's name",
                    f"tools[{i}].function.name",
                )
            params = fn.get("parameters")
            if params is not None:
                problem = schema_problem(params, "parameters")
                if problem:
                    raise InvalidRequest(
                        f"tools[{i}].function.{problem}; give a JSON Schema object such as "
                        '{"type": "object", "properties": {...}}',
                        f"tools[{i}].function.parameters",
                    )


def check_embeddings(body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: required, the name of an embedding model", "model")
    value = body.get("input")
    ok = isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, (str, int, list)) for v in value)
    )
    if not ok:
        raise InvalidRequest("input: required, a string or a non-empty list of strings", "input")


def schema_problem(schema: Any, where: str, depth: int = 0) -> str | None:
    """Why ``schema`` is not a JSON Schema (structurally), or None."""
    if depth > 32:
        return f"{where}: nested too deeply"
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{where}: is not a JSON Schema (must be an object)"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in SCHEMA_TYPES:
            return (
                f"{where}.type: {k!r} is not a JSON Schema type ({', '.join(sorted(SCHEMA_TYPES))})"
            )
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            return f"{where}.properties: must be an object of schemas"
        for name, sub in props.items():
            problem = schema_problem(sub, f"{where}.properties.{name}", depth + 1)
            if problem:
                return problem
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(r, str) for r in required)
    ):
        return f"{where}.required: must be a list of property names"
    items = schema.get("items")
    if items is not None:
        return schema_problem(items, f"{where}.items", depth + 1)
    return None


def prompt_bytes(body: dict[str, Any]) -> int:
    """An upper bound on prompt tokens: no tokenizer makes more tokens than UTF-8 bytes."""
    import orjson

    size = len(orjson.dumps(body.get("messages") or []))
    if body.get("tools"):
        size += len(orjson.dumps(body["tools"]))
    return size


def max_output(body: dict[str, Any], default: int) -> int:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if isinstance(value, int) and value > 0 else default
