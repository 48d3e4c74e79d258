"""Parsing from many threads at once: each query is tokenized and parsed as its own text (a
sqlglot tokenizer keeps the text it works on, so none may be shared between threads: one
shared tokenizer gave concurrent agents spurious syntax errors)."""

from __future__ import annotations

import sys
import threading

from engine.query.sql_policy import PUBLIC_DIALECT, parse_query


def test_queries_parsed_on_many_threads_at_once_keep_their_own_text() -> None:
    texts = [f"SELECT c{i}, '{'x' * (i % 40)}' AS s FROM t{i} WHERE a{i} = {i} AND b IN ({', '.join(map(str, range(i % 30)))}0)"
             for i in range(64)]
    wrong: list[str] = []
    start = threading.Barrier(8)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: mid-tokenizing too
    try:
        def parse(offset: int) -> None:
            start.wait()
            for n in range(200):
                text = texts[(offset + n) % len(texts)]
                try:
                    tree, _ = parse_query(text)
                except Exception as e:  # noqa: BLE001 - another thread's text in the tokenizer
                    wrong.append(f"{text}: {e}")
                    continue
                if f"c{(offset + n) % len(texts)}" not in tree.sql(PUBLIC_DIALECT).split(",")[0]:
                    wrong.append(text)

        threads = [threading.Thread(target=parse, args=(k * 7,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not wrong, wrong[:3]
