"""A plain LLM app: OpenAI and Anthropic SDK calls, no import of otel_llmcost.

Run it under `opentelemetry-instrument` and every call becomes a priced row. The clients take their
endpoints from OPENAI_BASE_URL / ANTHROPIC_BASE_URL (the demo points them at the local sandbox).
"""

import asyncio
import os

import anthropic
import openai

SYSTEM_PROMPT = "You are a terse assistant for an online bookshop. " * 120  # long enough to be prompt-cached


def main() -> None:
    oai = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ.get("OPENAI_API_KEY", "sandbox"))
    ant = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_BASE_URL"],
                              api_key=os.environ.get("ANTHROPIC_API_KEY", "sandbox"))

    for question in ("Which fantasy novels are in stock?", "Do you ship to Norway?"):
        reply = oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
        )
        print("openai:", reply.choices[0].message.content[:60])

    stream = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Summarise our returns policy."}],
        stream=True, stream_options={"include_usage": True},
    )
    print("openai stream:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices)[:60])

    for question in ("Recommend a mystery novel.", "Recommend a poetry collection."):
        message = ant.messages.create(
            model="claude-sonnet-4-6", max_tokens=200,
            system=[{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": question}],
        )
        print("anthropic:", message.content[0].text[:60])

    async def async_call() -> None:
        client = anthropic.AsyncAnthropic(base_url=os.environ["ANTHROPIC_BASE_URL"],
                                          api_key=os.environ.get("ANTHROPIC_API_KEY", "sandbox"))
        message = await client.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                               messages=[{"role": "user", "content": "Say hello."}])
        print("anthropic async:", message.content[0].text[:60])

    asyncio.run(async_call())


if __name__ == "__main__":
    main()
