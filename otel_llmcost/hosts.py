"""Which provider a call's host stands for, shared by the instrumentation (an SDK client's base URL) and the
collector (`server.address` of other instrumentations' spans).

A model served from loopback, a private network or a known self-hosting server (Ollama, vLLM, LM Studio,
llama.cpp's server, Hugging Face TGI) costs what its hardware costs, not a hosted API's list price, so its calls
get a provider name of their own (`ollama`, `vllm`, `lmstudio`, `llamacpp`, `tgi`, else `self-hosted`) and are
priced only by the price file. The user's mapping (`OTEL_LLMCOST_PROVIDER_HOSTS=host=provider,...`) comes first;
`host=hosted` says that a host stands for the hosted API the SDK or span names (a gateway, a proxy, a test
stand-in), so its calls keep that provider.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from typing import Mapping

HOSTS_ENV = "OTEL_LLMCOST_PROVIDER_HOSTS"
# The mapping value that keeps the provider the SDK (or the span) names.
HOSTED = "hosted"
SELF_HOSTED = "self-hosted"
# Provider names of self-hosted servers: priced by the price file only, never guessed from the catalog.
SELF_HOSTED_PROVIDERS = frozenset({SELF_HOSTED, "ollama", "vllm", "lmstudio", "llamacpp", "tgi"})

# Default ports specific enough to name the server (vLLM's 8000 and llama.cpp's and TGI's 8080 are not).
SERVER_PORTS = {11434: "ollama", 1234: "lmstudio"}
# Words in a host name that name the server (`ollama`, `gpu1.vllm.internal`, `llama-cpp.lan`, `tgi-0`).
SERVER_WORDS = {"ollama": "ollama", "vllm": "vllm", "lmstudio": "lmstudio", "llamacpp": "llamacpp", "tgi": "tgi"}
SERVER_WORD_PAIRS = {("lm", "studio"): "lmstudio", ("llama", "cpp"): "llamacpp"}
# Name suffixes of loopback and private networks.
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, as Tailscale and other overlays use


def host_mapping(value: str | None) -> dict[str, str]:
    """`OTEL_LLMCOST_PROVIDER_HOSTS`: `host=provider` pairs, comma-separated (`llm.internal=vllm,...`)."""
    mapping = {}
    for pair in (value or "").split(","):
        host, _, provider = pair.partition("=")
        if host.strip() and provider.strip():
            mapping[host.strip().lower()] = provider.strip()
    return mapping


def match_host(host: str, table: Mapping[str, str]) -> str | None:
    for known, provider in table.items():
        if host == known or host.endswith("." + known):
            return provider
    return None


def named_provider(host: str) -> str | None:
    """The provider the user's mapping names for a host (`hosted` included), else None."""
    return match_host(host.lower(), host_mapping(os.environ.get(HOSTS_ENV)))


def is_private(host: str) -> bool:
    """Loopback, a private or link-local address, or a name that only resolves inside a network."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(PRIVATE_SUFFIXES)
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified
            or (address.version == 4 and address in _CGNAT))


@lru_cache(maxsize=512)
def self_hosted_provider(host: str, port: int | None = None) -> str | None:
    """The provider name of a self-hosting server at host:port, or None for a host that is none (a public
    API). A server named by its port or a word of its host name is one wherever it runs; any other host on
    loopback or a private network is `self-hosted`."""
    host = (host or "").lower()
    if port in SERVER_PORTS:
        return SERVER_PORTS[port]
    words = re.split(r"[.\-_]", host)
    for word in words:
        if word in SERVER_WORDS:
            return SERVER_WORDS[word]
    for pair, provider in SERVER_WORD_PAIRS.items():
        if any(tuple(words[i:i + 2]) == pair for i in range(len(words) - 1)):
            return provider
    return SELF_HOSTED if host and is_private(host) else None


def is_self_hosted(provider: str) -> bool:
    return provider.lower() in SELF_HOSTED_PROVIDERS
