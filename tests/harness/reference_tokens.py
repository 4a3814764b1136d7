"""OpenAI's own tokenizer (the `tiktoken` package) as the reference for token counts.

No model hub is reachable, so tiktoken is pointed at the BPE files that ship inside the
tiktoken-rs crate in Cargo's registry (the same published files; tiktoken checks their hashes).
"""

import glob
import hashlib
import os
import shutil
import tempfile

_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def _prepare_cache():
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    assets = sorted(glob.glob(os.path.join(cargo_home, "registry", "src", "*", "tiktoken-rs-*", "assets")))
    if not assets:
        raise RuntimeError("tiktoken-rs sources not found in Cargo's registry: build the workspace first")
    cache = tempfile.mkdtemp(prefix="tiktoken-")
    for name in ("o200k_base", "cl100k_base"):
        target = os.path.join(cache, hashlib.sha1(_URL.format(name).encode()).hexdigest())
        shutil.copy(os.path.join(assets[-1], f"{name}.tiktoken"), target)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def encoding_for(model: str):
    _prepare_cache()
    import tiktoken

    name = model.rsplit("/", 1)[-1].lower()
    o200k = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4", "gpt-oss")
    return tiktoken.get_encoding("o200k_base" if name.startswith(o200k) else "cl100k_base")


def count(model: str, text: str) -> int:
    return len(encoding_for(model).encode_ordinary(text))


def chat_prompt_tokens(model: str, messages) -> int:
    """OpenAI's published rule: 3 per message, 1 per name, 3 to prime the reply."""
    total = 3
    for m in messages:
        total += 3 + count(model, m["role"]) + count(model, m["content"])
        if "name" in m:
            total += 1 + count(model, m["name"])
    return total
