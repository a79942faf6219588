"""Token usage in one normalised shape, and its exact cost in integer micro-dollars.

Providers disagree on what ``input`` means: OpenAI's ``prompt_tokens`` includes cached
tokens, Anthropic's ``input_tokens`` excludes them. Here ``input_tokens`` is always the
uncached input, and the cache tiers are counted on their own, so nothing is billed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

MICROS_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """Micro-dollars per million tokens, and per hour of compute (zeroserve endpoints)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    compute_per_hour: int = 0

    def cost(self, usage: Usage) -> int:
        """Exact cost in micro-dollars, rounded up to the next micro-dollar."""
        pico = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        )
        token_cost = -(-pico // TOKENS_PER_PRICE_UNIT)
        compute_cost = -(-(usage.compute_us * self.compute_per_hour) // 3_600_000_000)
        return int(token_cost + compute_cost)

    def worst_case(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """The most a call can cost: every input token at the dearest input tier."""
        dearest_in = max(self.input, self.cache_read, self.cache_write)
        pico = prompt_tokens * dearest_in + max_output_tokens * self.output
        return int(-(-pico // TOKENS_PER_PRICE_UNIT))


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    """Uncached input tokens."""
    output_tokens: int = 0
    """Output tokens, reasoning included."""
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    compute_us: int = 0
    """Measured compute time (zeroserve endpoints)."""

    @property
    def prompt_tokens(self) -> int:
        """All input tokens, as OpenAI counts them."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @classmethod
    def from_openai(cls, u: dict[str, object] | None) -> Usage | None:
        if not isinstance(u, dict):
            return None
        prompt = _int(u.get("prompt_tokens"))
        details = u.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        out_details = u.get("completion_tokens_details")
        reasoning = (
            _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
        )
        return cls(
            input_tokens=max(prompt - cached, 0),
            output_tokens=_int(u.get("completion_tokens")),
            cache_read_tokens=cached,
            reasoning_tokens=reasoning,
        )

    def to_openai(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @classmethod
    def from_anthropic(cls, u: dict[str, object] | None) -> Usage | None:
        if not isinstance(u, dict):
            return None
        return cls(
            input_tokens=_int(u.get("input_tokens")),
            output_tokens=_int(u.get("output_tokens")),
            cache_read_tokens=_int(u.get("cache_read_input_tokens")),
            cache_write_tokens=_int(u.get("cache_creation_input_tokens")),
        )

    def to_anthropic(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_bedrock(cls, u: dict[str, object] | None) -> Usage | None:
        """Bedrock's ``inputTokens`` excludes cache reads and writes (as Anthropic's)."""
        if not isinstance(u, dict):
            return None
        return cls(
            input_tokens=_int(u.get("inputTokens")),
            output_tokens=_int(u.get("outputTokens")),
            cache_read_tokens=_int(u.get("cacheReadInputTokens")),
            cache_write_tokens=_int(u.get("cacheWriteInputTokens")),
        )


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
