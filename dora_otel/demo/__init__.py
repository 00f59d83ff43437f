"""`dora-otel demo`: a simulated market-making bot on a paper exchange with seeded faults.

The bot (bot.py) is instrumented only through dora_otel's public API, exactly as the real Dora bot
would be; the paper exchange (exchange.py) keeps its own record of what happened to every order,
which tests compare with what `dora-otel explain` concludes from telemetry alone.
"""
