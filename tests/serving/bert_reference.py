"""A plain numpy forward pass of a sentence-transformers BERT model (WordPiece tokens, encoder,
mean pooling, unit length), straight from its safetensors weights: the reference the GGUF that
llama.cpp runs is checked against. Test-only; slow and simple on purpose."""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


class BertReference:
    def __init__(self, model_dir: Path) -> None:
        import json

        self.config = json.loads((model_dir / "config.json").read_text())
        self.w = load_file(str(model_dir / "model.safetensors"))
        self.vocab = {t: i for i, t in enumerate((model_dir / "vocab.txt").read_text().splitlines())}

    def tokens(self, text: str) -> list[int]:
        """BERT's uncased WordPiece: lower-case, strip accents, split on spaces and punctuation,
        then greedy longest-match pieces."""
        text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        words = re.findall(r"\w+|[^\w\s]", text)
        ids = [self.vocab["[CLS]"]]
        for word in words:
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = ("##" if start else "") + word[start:end]
                    if piece in self.vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                pieces.append(self.vocab[piece])
                start = end
            ids += pieces
        return ids + [self.vocab["[SEP]"]]

    def embed(self, text: str) -> np.ndarray:
        w, c = self.w, self.config
        ids = self.tokens(text)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _norm(x, w, "embeddings.LayerNorm", c["layer_norm_eps"])
        heads = c["num_attention_heads"]
        dim = c["hidden_size"] // heads
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def lin(name: str, v: np.ndarray) -> np.ndarray:
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q, k, v = (lin(f"attention.self.{n}", x).reshape(len(ids), heads, dim).transpose(1, 0, 2)
                       for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dim)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            attn = attn.transpose(1, 0, 2).reshape(len(ids), -1)
            x = _norm(x + lin("attention.output.dense", attn), w, p + "attention.output.LayerNorm", c["layer_norm_eps"])
            h = lin("intermediate.dense", x)
            h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
            x = _norm(x + lin("output.dense", h), w, p + "output.LayerNorm", c["layer_norm_eps"])
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)


def _norm(x: np.ndarray, w: dict, name: str, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]
