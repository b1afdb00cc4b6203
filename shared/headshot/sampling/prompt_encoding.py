"""Prompt conditioning for the standalone sampler, read the way A1111 and ComfyUI read prompts.

diffusers on its own cuts prompts at 77 tokens and takes "(word:1.2)" literally. The hosts
instead split long prompts into 75-token chunks (each wrapped in start/end tokens, encoded
separately, concatenated) and scale the embeddings of weighted words. This does the same for
the only weight form our styles write: un-nested "(text:w)", with "\\(" "\\)" as literal brackets.
"""

from __future__ import annotations

import re

import torch

from ..families import get_family

CHUNK = 75  # tokens per chunk, plus the start and end tokens: CLIP's 77
_WEIGHTED = re.compile(r"(?<!\\)\((?P<text>(?:[^()\\]|\\.)*?):(?P<weight>[0-9.]+)(?<!\\)\)")


def parse_weights(prompt: str) -> list[tuple[str, float]]:
    """("text", weight) segments; unweighted text has weight 1.0 and escaped brackets become literal."""
    segments, pos = [], 0
    for match in _WEIGHTED.finditer(prompt):
        if match.start() > pos:
            segments.append((prompt[pos : match.start()], 1.0))
        segments.append((match.group("text"), float(match.group("weight"))))
        pos = match.end()
    if pos < len(prompt):
        segments.append((prompt[pos:], 1.0))
    return [(text.replace("\\(", "(").replace("\\)", ")"), w) for text, w in segments if text.strip()]


def _tokens_and_weights(tokenizer, prompt: str) -> tuple[list[int], list[float]]:
    ids, weights = [], []
    for text, weight in parse_weights(prompt):
        piece = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
        ids += piece
        weights += [weight] * len(piece)
    return ids, weights


def _encode_chunks(tokenizer, encoder, ids, weights, chunks: int, device, penultimate: bool):
    """Hidden states [1, 77*chunks, D] with weights applied (mean restored), and the first chunk's pooled output."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    hidden, pooled = [], None
    for c in range(chunks):
        part = ids[c * CHUNK : (c + 1) * CHUNK]
        part_w = weights[c * CHUNK : (c + 1) * CHUNK]
        tokens = [bos] + part + [eos] + [pad] * (CHUNK - len(part))
        scale = torch.tensor([1.0] + part_w + [1.0] * (CHUNK + 1 - len(part)), device=device)
        out = encoder(torch.tensor([tokens], device=device), output_hidden_states=penultimate)
        states = out.hidden_states[-2] if penultimate else out[0]
        if any(w != 1.0 for w in part_w):
            original_mean = states.mean()
            states = states * scale[None, :, None].to(states.dtype)
            weighted_mean = states.mean()
            # A1111's renormalisation keeps the overall scale; layer-normed states can average exactly 0
            # (random weights, some CPUs' exact sums), where dividing would make every value NaN
            if weighted_mean != 0:
                states = states * (original_mean / weighted_mean)
        hidden.append(states)
        if c == 0:
            pooled = out[0] if penultimate else None  # SDXL's projected pooled output (second encoder)
    return torch.cat(hidden, dim=1), pooled


@torch.no_grad()
def encode_prompts(base, prompt: str, negative: str, device) -> dict:
    """Keyword arguments for a diffusers pipeline: prompt (and negative) embeddings of equal length."""
    encoders = list(zip(base.tokenizers, base.text_encoders))
    parsed = [[_tokens_and_weights(tok, text) for tok, _ in encoders] for text in (prompt, negative)]
    chunks = max(1, *(-(-len(ids) // CHUNK) for per_text in parsed for ids, _ in per_text))
    family = get_family(base.family)
    result: dict[str, torch.Tensor | None] = {}
    for key, per_text in zip(("prompt_embeds", "negative_prompt_embeds"), parsed):
        states, pooled = [], None
        for (tokenizer, encoder), (ids, weights) in zip(encoders, per_text):
            hidden, pooled = _encode_chunks(
                tokenizer, encoder, ids, weights, chunks, device, penultimate=family.penultimate_text_states
            )
            states.append(hidden)
        result[key] = torch.cat(states, dim=-1)
        if family.size_conditioning:  # the UNet also takes the pooled text embedding
            result["pooled_prompt_embeds" if key == "prompt_embeds" else "negative_pooled_prompt_embeds"] = pooled
    return result
