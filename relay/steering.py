"""The caller's steering, within what their key allows: a fallback list of models and provider
preferences, in any inbound format (OpenAI chat and responses, Anthropic messages, Gemini).

- `models: ["a", "b", …]` (OpenRouter's shape): the models to try in order after `model` (or, when
  the body names no `model`, instead of it); an operator's alias (relay/snapshot.py `ModelRoute`)
  stands for its list too. Before the first byte a failure moves to the next model's channels.
- `provider`: `order`, `only`, `ignore` (names and tags of channels the operator made public),
  `sort` (`price`, `latency`, `throughput`), `max_price` (µ$ per 1M input / output tokens, the
  caller's own price) and `allow_fallbacks`.

Both fields are taken out of the body before the endpoint parses it, so no upstream ever sees them.
A body that mentions neither costs one substring scan; nothing else runs on the plain path.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from msgspec import Meta, Struct

from relay.errors import RelayError
from relay.snapshot import ChannelView
from relay.validation import check
from relay.validation.fields import ModelName

MAX_MODELS = 8  # models one request may fall back through
MAX_PROVIDER_NAMES = 32
PROVIDER_NAME_MAX_CHARS = 100  # a channel's name is at most 100 characters, its tag 64
FIELDS = ("models", "provider")
MODEL_HEADER = "x-switchboard-model"  # names the model that answered a steered request
LIST_PRICE_BP = 10_000

ProviderName = Annotated[str, Meta(min_length=1, max_length=PROVIDER_NAME_MAX_CHARS)]
ProviderNames = Annotated[list[ProviderName], Meta(max_length=MAX_PROVIDER_NAMES)]
PerMillion = Annotated[int, Meta(ge=0, le=2**53)]


class MaxPriceBody(Struct, kw_only=True, forbid_unknown_fields=True):
    prompt: PerMillion | None = None  # µ$ per 1M input tokens
    completion: PerMillion | None = None  # µ$ per 1M output tokens


class ProviderBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """Names and tags of the channels the operator made public; any other key is refused."""

    order: ProviderNames | None = None
    only: ProviderNames | None = None
    ignore: ProviderNames | None = None
    sort: Literal["price", "latency", "throughput"] | None = None
    max_price: MaxPriceBody | None = None
    allow_fallbacks: bool | None = None


class SteerBody(Struct, kw_only=True):
    """Fallback models (tried in order after `model`) and provider preferences, in any JSON body;
    taken out before the body goes upstream. The answer names its model in `x-switchboard-model`."""

    models: Annotated[list[ModelName], Meta(min_length=1, max_length=MAX_MODELS)] | None = None
    provider: ProviderBody | None = None


@dataclass(frozen=True, slots=True)
class Preferences:
    """`provider`, checked: names are lower-cased; each resolved to channel ids by `resolve`."""

    order: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    sort: str | None = None
    max_input: int | None = None
    max_output: int | None = None
    allow_fallbacks: bool = True

    @property
    def orders(self) -> bool:
        """The caller set the order of the routes itself (`order`, `sort`): a conversation's pinned
        route (relay/affinity.py) does not override it."""
        return bool(self.order or self.sort)


@dataclass(frozen=True, slots=True)
class Steering:
    models: tuple[str, ...] = ()  # the `models` list as sent
    provider: Preferences | None = None


def extract(body: bytes, error_format: str, model_in_path: bool) -> tuple[Steering | None, bytes]:
    """The steering fields out of a JSON body, and the body without them; (None, body) untouched
    when it has none. A body that does not parse is left for the endpoint to refuse."""
    if b'"models"' not in body and b'"provider"' not in body:
        return None, body
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body
    if not isinstance(payload, dict) or not any(name in payload for name in FIELDS):
        return None, body
    spec = check({name: payload.pop(name) for name in FIELDS if name in payload}, SteerBody, error_format)
    models = tuple(spec.models or ())
    if models and "model" not in payload and not model_in_path:
        payload["model"] = models[0]
    return Steering(models, preferences(spec.provider)), orjson.dumps(payload)


def preferences(spec: ProviderBody | None) -> Preferences | None:
    if spec is None:
        return None
    price = spec.max_price or MaxPriceBody()
    return Preferences(
        order=tuple(n.lower() for n in spec.order or ()),
        only=tuple(n.lower() for n in spec.only or ()),
        ignore=tuple(n.lower() for n in spec.ignore or ()),
        sort=spec.sort,
        max_input=price.prompt,
        max_output=price.completion,
        allow_fallbacks=spec.allow_fallbacks is not False,
    )


def check_names(prefs: Preferences, public: dict[str, frozenset[int]]) -> None:
    """A 400 naming the first provider name that is no public channel name or tag."""
    for field in ("order", "only", "ignore"):
        for index, name in enumerate(getattr(prefs, field)):
            if name not in public:
                raise RelayError(400, "invalid_value", f"provider.{field}[{index}]: '{name}' is not a provider this service offers.",
                                 param=f"provider.{field}[{index}]")


def within_price(prefs: Preferences | None, input_price: int, output_price: int) -> bool:
    if prefs is None:
        return True
    return (prefs.max_input is None or input_price <= prefs.max_input) and (prefs.max_output is None or output_price <= prefs.max_output)


@dataclass(frozen=True, slots=True)
class Preferred:
    """A model's channels after the caller's preferences: in the caller's order when `ordered`
    (then the selector keeps it), else still the operator's; and those left out, with why."""

    channels: tuple[ChannelView, ...]
    ordered: bool
    left_out: tuple[tuple[int, str], ...]


def prefer(channels: tuple[ChannelView, ...], prefs: Preferences, public: dict[str, frozenset[int]],
           measure: Callable[[str, ChannelView], float]) -> Preferred:
    """Apply `only`, `ignore`, `order`, `sort` and `allow_fallbacks` to a model's channels (highest
    priority first). `measure(sort, channel)` is the sort's key, smaller first."""
    def ids(names: tuple[str, ...]) -> frozenset[int]:
        return frozenset(i for n in names for i in public.get(n, ()))

    left_out: list[tuple[int, str]] = []
    only, ignore = ids(prefs.only), ids(prefs.ignore)
    kept: list[ChannelView] = []
    for c in channels:
        if prefs.only and c.id not in only:
            left_out.append((c.id, "provider_only"))
        elif c.id in ignore:
            left_out.append((c.id, "provider_ignore"))
        else:
            kept.append(c)
    first: list[ChannelView] = []
    for name in prefs.order:
        first += [c for c in kept if c.id in public.get(name, ()) and c not in first]
    rest = [c for c in kept if c not in first]
    if prefs.sort is not None:
        sort = prefs.sort
        rest.sort(key=lambda c: measure(sort, c))  # stable: equal ones keep the operator's priority
    if not prefs.allow_fallbacks:
        # Only the caller's named providers; without `order`, only the one best channel.
        dropped = rest if first else rest[1:]
        left_out += [(c.id, "provider_no_fallbacks") for c in dropped]
        rest = [] if first else rest[:1]
    return Preferred(tuple(first + rest), bool(first) or prefs.sort is not None or not prefs.allow_fallbacks, tuple(left_out))


def cost_of(channel: ChannelView) -> int:
    """What a channel costs us, basis points of list price; unconfigured costs list."""
    return channel.cost_bp if channel.cost_bp is not None else LIST_PRICE_BP


def header_naming(model: str) -> tuple[str, str]:
    return MODEL_HEADER, model


def as_dict(steering: Steering) -> dict[str, Any]:
    """What the decision trace keeps of a request's steering."""
    out: dict[str, Any] = {}
    if steering.models:
        out["models"] = list(steering.models)
    p = steering.provider
    if p is not None:
        out["provider"] = {k: v for k, v in (("order", list(p.order)), ("only", list(p.only)), ("ignore", list(p.ignore)),
                                             ("sort", p.sort), ("max_input", p.max_input), ("max_output", p.max_output),
                                             ("allow_fallbacks", None if p.allow_fallbacks else False)) if v is not None and v != []}
    return out
