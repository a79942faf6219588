"""The LLM gateway: one OpenAI- and Anthropic-compatible endpoint in front of every provider.

Layers: ``config`` (logical models, deployments) -> ``providers`` (one adapter per wire
format) -> ``router`` (pure policies, breaker state) -> ``ledger`` (keys, budgets, usage:
one atomic store) -> ``calls`` (one call: reserve, try, settle) -> ``asgi`` (the routes).
"""
