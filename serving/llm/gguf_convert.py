"""Hugging Face BERT sentence-embedding models (safetensors) as GGUF, so llama.cpp runs them.

A sentence-transformers directory (`config.json`, `model.safetensors`, `vocab.txt` or
`tokenizer.json`, `1_Pooling/config.json`) such as all-MiniLM-L6-v2 is written once as a GGUF
file with ggml-org's own `gguf` writer; the model worker then loads it like any other GGUF.
Weights stay float32 (no quantisation: the vectors match the original model's). Tensor names
come from gguf's own BERT name map; the vocabulary is spelled the way llama.cpp's WordPiece
tokenizer reads it (a U+2581 before word starts, continuations without `##`).

Runs in the model worker process (numpy, safetensors and gguf are imported there only).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CONVERTER_VERSION = "1"  # part of the cache key: a changed converter writes a new file
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class ConversionError(ValueError):
    """The directory is not a model this converter can write as GGUF."""


def model_dir(path: str) -> Path:
    """The model directory for `path` (the directory itself, or the directory of its safetensors file)."""
    p = Path(path)
    return p.parent if p.suffix == ".safetensors" else p


def cache_name(source: Path) -> str:
    """A file name that changes when the model's weights or configuration change."""
    h = hashlib.sha256(CONVERTER_VERSION.encode())
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "1_Pooling/config.json"):
        f = source / name
        if f.exists():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{source.name or 'model'}-{h.hexdigest()[:16]}.gguf"


def converted(source_path: str, cache_dir: str) -> str:
    """The GGUF for the model at `source_path`, written into `cache_dir` unless already there."""
    source = model_dir(source_path)
    if not (source / "config.json").exists() or not (source / "model.safetensors").exists():
        raise ConversionError(f"{source_path}: expected a model directory with config.json and model.safetensors "
                              f"(a sentence-transformers BERT model), or a .gguf file")
    os.makedirs(cache_dir, exist_ok=True)
    target = Path(cache_dir) / cache_name(source)
    if target.exists():
        return str(target)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        write_gguf(source, tmp)
        os.replace(tmp, target)  # readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def _vocab(source: Path) -> list[str]:
    if (source / "vocab.txt").exists():
        return (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    if tok.get("model", {}).get("type") != "WordPiece":
        raise ConversionError("only WordPiece (BERT) tokenizers are supported")
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    return [by_id[i] for i in range(len(by_id))]


def _pooling(source: Path) -> int:
    """gguf.PoolingType: MEAN (1) or CLS (2), from sentence-transformers' pooling config."""
    conf = source / "1_Pooling" / "config.json"
    if not conf.exists():
        return 1
    pooling = json.loads(conf.read_text(encoding="utf-8"))
    if pooling.get("pooling_mode_mean_tokens"):
        return 1
    if pooling.get("pooling_mode_cls_token"):
        return 2
    raise ConversionError("only mean or CLS pooling is supported")


def write_gguf(source: Path, target: Path) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise ConversionError(f"model_type {config.get('model_type')!r} is not supported (only bert)")
    blocks = int(config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(target), "bert")
    writer.add_name(source.name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(_pooling(source)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = _vocab(source)
    ids = {t: i for i, t in enumerate(vocab)}
    types = [gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in vocab]
    spelled = [t if t in SPECIAL else (t[2:] if t.startswith("##") else "\u2581" + t) for t in vocab]
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(spelled)
    writer.add_token_types(types)
    for token, add in (("[CLS]", writer.add_bos_token_id), ("[SEP]", writer.add_sep_token_id),
                       ("[UNK]", writer.add_unk_token_id), ("[PAD]", writer.add_pad_token_id),
                       ("[MASK]", writer.add_mask_token_id)):
        if token in ids:
            add(ids[token])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    for name, tensor in load_file(str(source / "model.safetensors")).items():
        name = name.removeprefix("bert.")
        if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
            continue  # unused for sentence embeddings
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConversionError(f"unexpected tensor {name!r} in model.safetensors")
        writer.add_tensor(mapped, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
