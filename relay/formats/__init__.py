"""Conversions between provider wire formats: pure functions and stream decoders over decoded JSON.

The gateway's canonical form is OpenAI chat. `anthropic_*` converts OpenAI chat ⇄ Anthropic
Messages for Anthropic upstreams, `gemini_*` OpenAI chat ⇄ Gemini generateContent for Gemini
upstreams, and `messages_*` serves Anthropic-format callers through any OpenAI-shaped chat.
No I/O here; what a conversion cannot carry is listed in docs/conversions.md.
"""
