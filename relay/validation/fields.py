"""The limits on what a caller may send, and the constrained field types every schema is built from.

docs/limits.md lists the same numbers for callers; a change here is a change there. Where a provider
documents a limit of its own (OpenAI's metadata, embedding inputs), it is the relay's too; elsewhere
the bound is generous and only there so that nothing a caller sends is unbounded.
"""
from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

MODEL_MAX_CHARS = 256
IDENTIFIER_MAX_CHARS = 256  # `user`, Anthropic's metadata.user_id, ids and cache keys a caller names
ROLE_MAX_CHARS = 64
MAX_MESSAGES = 100_000  # messages, Responses input items, completion prompts
MAX_TOOLS = 1_024
MAX_STOP = 64
MAX_CHOICES = 128  # n, best_of
MAX_EMBEDDING_INPUTS = 2_048  # OpenAI's own limit for embeddings and moderations
MAX_IMAGES = 10
MAX_OUTPUT_TOKENS = 2**31 - 1  # a 32-bit count: anything larger is a mistake, not a wish
METADATA_MAX_PAIRS, METADATA_KEY_MAX_CHARS, METADATA_VALUE_MAX_CHARS = 16, 64, 512  # OpenAI's
LOGIT_BIAS_MAX_ENTRIES = 1_024

# Control characters (C0, DEL, C1), line and paragraph separators, zero-width and bidirectional
# controls: none belongs in a model name, and each would make logs and consoles lie about it.
_PRINTABLE = r"\A[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+\Z"


class Object(msgspec.Struct):
    """Any JSON object, its contents unchecked (and, unlike `dict`, not copied: checking is free)."""


ModelName = Annotated[str, Meta(min_length=1, max_length=MODEL_MAX_CHARS, pattern=_PRINTABLE)]
Identifier = Annotated[str, Meta(max_length=IDENTIFIER_MAX_CHARS)]
Role = Annotated[str, Meta(min_length=1, max_length=ROLE_MAX_CHARS)]
NonEmptyText = Annotated[str, Meta(min_length=1)]

Temperature = Annotated[float, Meta(ge=0, le=2)]  # OpenAI's range
UnitInterval = Annotated[float, Meta(ge=0, le=1)]  # top_p; Anthropic's temperature
Penalty = Annotated[float, Meta(ge=-2, le=2)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
OutputTokens = Annotated[int, Meta(ge=1, le=MAX_OUTPUT_TOKENS)]
Count = Annotated[int, Meta(ge=0, le=MAX_OUTPUT_TOKENS)]  # top_k, budgets: a non-negative 32-bit count
Choices = Annotated[int, Meta(ge=1, le=MAX_CHOICES)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]

StopList = Annotated[list[str], Meta(max_length=MAX_STOP)]
Stop = str | StopList

# OpenAI's metadata: at most 16 pairs, keys up to 64 characters, values strings up to 512.
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=METADATA_KEY_MAX_CHARS)], Annotated[str, Meta(max_length=METADATA_VALUE_MAX_CHARS)]],
    Meta(max_length=METADATA_MAX_PAIRS),
]
LogitBias = Annotated[dict[str, Annotated[float, Meta(ge=-100, le=100)]], Meta(max_length=LOGIT_BIAS_MAX_ENTRIES)]
