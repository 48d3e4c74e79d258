"""The model worker process: one GGUF model under llama-cpp-python, one request at a time.

The supervisor (`serving.llm.worker`) starts it as `python -m serving.llm.llama_worker <fd>`
and talks over that socket with `multiprocessing.connection` messages. A native crash here
(SIGSEGV in llama.cpp, the OOM killer) ends only this process. It imports nothing from the
project, so the process stays small and starts fast.

An embedding-only model (`spec["embedding_only"]`, an `embeddings:` entry) loads with llama.cpp's
embedding mode alone; a sentence-transformers directory is first written as GGUF
(`serving.llm.gguf_convert`, the one project module imported here, and only for such models).

Messages in:  ("chat", id, kwargs, seed, stream) | ("embed", id, inputs) | ("cancel", id) | ("stop",)
Messages out: ("ready", info) | ("load_error", text) | ("chunk", id, chunk) | ("result", id, out)
              | ("done", id) | ("error", id, kind, text)   kind: cancelled | bad_request | failed
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any


class Cancelled(Exception):
    """Raised inside generation when the supervisor cancels the running request."""


def amx_cpu() -> bool:
    """True when the CPU advertises AMX, whose llama.cpp extra buffer type crashes in llama_decode."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return " amx_tile" in f.read()
    except OSError:
        return False


def use_extra_buffers(mode: str) -> bool:
    """`on` | `off` | `auto` (off on AMX CPUs, where the AMX buffer type faults)."""
    return mode == "on" or (mode == "auto" and not amx_cpu())


def _set_extra_buffers(enabled: bool) -> None:
    """llama-cpp-python has no argument for llama.cpp's `use_extra_bufts`: default it here,
    in this process only, before any model loads."""
    import llama_cpp.llama_cpp as native

    default = native.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = enabled
        return p

    native.llama_model_default_params = params


class Runner:
    """The loaded model; runs requests on the calling thread."""

    def __init__(self, spec: dict) -> None:
        import llama_cpp

        self.spec = spec
        self.extra_buffers = use_extra_buffers(spec.get("extra_buffers", "auto"))
        _set_extra_buffers(self.extra_buffers)
        if not os.path.exists(spec["path"]):
            raise FileNotFoundError(f"model file {spec['display_path']} not found")
        started = time.monotonic()
        self.embedder: Any = None
        self.llm: Any = None
        if spec.get("embedding_only"):
            path = spec["path"]
            if not path.endswith(".gguf"):
                from serving.llm.gguf_convert import converted

                path = converted(path, spec["cache_dir"])
            n_ctx = spec["n_ctx"]
            self.embedder = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                            n_threads=spec["n_threads"], embedding=True, verbose=False)
            self.embedder.embed("ok")  # exercise the encoder now, not on a client's request
        else:
            self.llm = llama_cpp.Llama(model_path=spec["path"], n_ctx=spec["n_ctx"], n_threads=spec["n_threads"],
                                       chat_format=spec.get("chat_format"), verbose=False)
            self.llm.create_completion("ok", max_tokens=1)  # exercise llama_decode now, not on a client's request
            self.llm.reset()
        self.load_seconds = time.monotonic() - started
        self.cancelled: set[int] = set()
        self.current: int | None = None

    def info(self) -> dict:
        return {"extra_buffers": self.extra_buffers, "load_seconds": round(self.load_seconds, 3),
                "pid": os.getpid()}

    def chat(self, conn: Connection, rid: int, kw: dict, seed: int | None, stream: bool) -> None:
        """Generates token by token (llama-cpp-python's stream), checking for a cancel between
        tokens; a non-streaming request is sent as one completion at the end."""
        if seed is not None:
            self.llm.set_seed(int(seed))
        text: list[str] = []
        finish = None
        chunks = self.llm.create_chat_completion(stream=True, **kw)
        try:
            for c in chunks:
                if rid in self.cancelled:
                    raise Cancelled()
                choice = c["choices"][0]
                content = (choice.get("delta") or {}).get("content")
                if content:
                    text.append(content)
                finish = choice.get("finish_reason") or finish
                if stream:
                    conn.send(("chunk", rid, {"choices": c["choices"]}))
        finally:
            chunks.close()
        completion = len(self.llm.tokenize("".join(text).encode(), add_bos=False, special=True)) if text else 0
        prompt = max(0, int(self.llm.n_tokens) - completion)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if stream:
            conn.send(("chunk", rid, {"choices": [], "usage": usage}))
        else:
            conn.send(("result", rid, {
                "object": "chat.completion", "created": int(time.time()), "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "logprobs": None, "finish_reason": finish or "stop"}]}))

    def embed(self, conn: Connection, rid: int, inputs: list[str]) -> None:
        """OpenAI's embeddings result; embedding-only models send the vectors as one float32
        array (`vectors`, unit length) with the token count, which is what their callers use."""
        if self.spec.get("embedding_only"):
            import numpy as np

            vectors, tokens = self.embedder.embed(inputs, normalize=True, truncate=True, return_count=True)
            conn.send(("result", rid, {"vectors": np.asarray(vectors, dtype=np.float32), "tokens": int(tokens)}))
            return
        if self.embedder is None:
            import llama_cpp

            s = self.spec
            self.embedder = llama_cpp.Llama(model_path=s["path"], n_ctx=s["n_ctx"], n_threads=s["n_threads"],
                                            embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                            verbose=False)
        conn.send(("result", rid, self.embedder.create_embedding(inputs)))


def _read(conn: Connection, runner: Runner, jobs: queue.Queue) -> None:
    """Takes messages off the socket; cancels act at once, work waits its turn."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the supervisor is gone: never outlive it
        if msg[0] == "cancel":
            runner.cancelled.add(msg[1])
        elif msg[0] == "stop":
            os._exit(0)
        else:
            jobs.put(msg)


def serve(conn: Connection) -> int:
    spec = conn.recv()
    try:
        runner = Runner(spec)
    except Exception as e:  # a load failure is permanent: the supervisor does not retry it
        conn.send(("load_error", f"{type(e).__name__}: {e}"))
        return 1
    conn.send(("ready", runner.info()))
    jobs: queue.Queue = queue.Queue()
    threading.Thread(target=_read, args=(conn, runner, jobs), name="reader", daemon=True).start()
    while True:
        msg = jobs.get()
        kind, rid = msg[0], msg[1]
        runner.current = rid
        try:
            if rid in runner.cancelled:
                raise Cancelled()
            if kind == "chat":
                runner.chat(conn, rid, *msg[2:])
            elif kind == "embed":
                runner.embed(conn, rid, msg[2])
            conn.send(("done", rid))
        except Cancelled:
            conn.send(("error", rid, "cancelled", "cancelled"))
        except ValueError as e:  # llama-cpp-python's word for a request it cannot take (e.g. too long)
            conn.send(("error", rid, "bad_request", str(e)))
        except Exception as e:
            conn.send(("error", rid, "failed", f"{type(e).__name__}: {e}"))
        finally:
            runner.cancelled.discard(rid)
            runner.current = None


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[1]))
    try:
        return serve(conn)
    except (EOFError, OSError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
