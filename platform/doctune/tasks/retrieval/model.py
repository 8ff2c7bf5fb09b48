"""The retrieval task's trainable module: a bi-encoder over a transformers ``AutoModel``.

Kept apart from the plugin module so that importing the plugin (the API does, to
validate uploads) does not import torch. The module is a plain ``torch.nn.Module``
with the inner model's ``config`` and a ``save_pretrained`` that writes the inner
model only, so the pre-flight plan, peft (a plain ``PeftModel``, which passes every
keyword through), DeepSpeed and the export treat it like a transformers model, and
the exported directory is an ordinary ``AutoModel`` checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

TEMPERATURE = 0.05  # in-batch softmax temperature (cosine similarities / 0.05)


@dataclass
class BiEncoderOutput:
    """``loss``: in-batch-negatives cross-entropy (None without documents); ``q``, ``d``:
    L2-normalised query and document embeddings, one row per example."""

    loss: torch.Tensor | None = None
    q: torch.Tensor | None = None
    d: torch.Tensor | None = None


def load_encoder(path: str, pretrained: bool = True) -> Any:
    """``AutoModel`` at ``path`` without the pooler where the architecture has one
    (BERT-style ``[CLS]`` pooler: unused by mean pooling, so it would only be a trainable
    parameter that never gets a gradient). ``pretrained=False`` builds the architecture
    only (the plan does so on the meta device)."""
    import transformers

    if not pretrained:
        cfg = transformers.AutoConfig.from_pretrained(path)
        try:
            return transformers.AutoModel.from_config(cfg, add_pooling_layer=False)
        except TypeError:  # an architecture without that switch (e.g. DistilBERT: no pooler at all)
            return transformers.AutoModel.from_config(cfg)
    try:
        return transformers.AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:
        return transformers.AutoModel.from_pretrained(path)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors the attention mask keeps, L2-normalised (computed in fp32)."""
    m = mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * m).sum(1)
    return F.normalize(summed / m.sum(1).clamp(min=1e-9), dim=-1)


class BiEncoder(torch.nn.Module):
    """One shared encoder for queries and documents; mean pooling; cosine similarity."""

    def __init__(self, encoder: Any, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature

    # transformers-like surface, for plan.py, peft and the export
    @property
    def config(self) -> Any:
        return self.encoder.config

    @config.setter
    def config(self, value: Any) -> None:
        self.encoder.config = value

    def get_input_embeddings(self) -> Any:
        return self.encoder.get_input_embeddings()

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any:
        """Write the inner encoder only: the export loads with ``AutoModel.from_pretrained``."""
        return self.encoder.save_pretrained(save_directory, **kwargs)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        q_input_ids: torch.Tensor | None = None,
        q_attention_mask: torch.Tensor | None = None,
        d_input_ids: torch.Tensor | None = None,
        d_attention_mask: torch.Tensor | None = None,
        doc_key: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BiEncoderOutput:
        """Training/evaluation: ``q_*`` and ``d_*`` (a batch of positive pairs) give the loss.
        ``doc_key`` (int64 per pair) masks other in-batch copies of a pair's own document out
        of its negatives. ``input_ids``/``attention_mask`` alone embed one batch of texts (as
        ``q``); next to ``q_*`` they are ignored (the collate adds an ``attention_mask`` over
        all tokens for the loop's token count). Other keywords are swallowed."""
        if q_input_ids is None:
            if input_ids is None:
                raise ValueError("BiEncoder needs q_input_ids (and d_input_ids) or input_ids")
            return BiEncoderOutput(q=self.embed(input_ids, attention_mask))
        q = self.embed(q_input_ids, q_attention_mask)
        if d_input_ids is None:
            return BiEncoderOutput(q=q)
        d = self.embed(d_input_ids, d_attention_mask)
        logits = q @ d.T / self.temperature
        if doc_key is not None:
            same = doc_key.view(-1, 1) == doc_key.view(1, -1)
            same &= ~torch.eye(len(doc_key), dtype=torch.bool, device=same.device)
            logits = logits.masked_fill(same, float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(len(q), device=q.device))
        return BiEncoderOutput(loss=loss, q=q, d=d)


def unwrap(model: Any) -> Any:
    """The BiEncoder inside what the loop exports (a peft model, or a DeepSpeed engine)."""
    for _ in range(4):
        if isinstance(model, BiEncoder):
            return model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            break
    return model


@torch.inference_mode()
def embed_texts(model: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 32) -> Any:
    """Normalised embeddings (float32 numpy, one row per text) with the model's current weights."""
    import numpy as np

    bi = unwrap(model)
    was_training = bi.training
    bi.eval()
    device = next(bi.parameters()).device
    rows = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")
            rows.append(bi.embed(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu().numpy())
    finally:
        bi.train(was_training)
    hidden = int(getattr(bi.config, "hidden_size", 0))
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, hidden), dtype=np.float32)
