"""How much of a caption the text tower sees: one rule for the caption stages and the model.

Kept apart from :mod:`pixsieve.models.clip_text` so that reading captions imports no torch.
"""

from __future__ import annotations

MAX_CAPTION_CHARS = 4096
"""Characters of a caption that are kept and tokenised (see :func:`clip_chars`)."""


def clip_chars(text: str) -> str:
    """``text``, or when longer than :data:`MAX_CAPTION_CHARS` its whitespace-collapsed start.

    Collapsing first (as CLIP's tokenizer does anyway) means a cut caption holds 4096 characters
    of words, far over 77 tokens, so cutting never hides that a caption was truncated.
    """
    if len(text) <= MAX_CAPTION_CHARS:
        return text
    return " ".join(text.split())[:MAX_CAPTION_CHARS]
