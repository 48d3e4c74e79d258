"""Principals and policies in the spicepod: validated like every other key (file, line, key)."""

from __future__ import annotations

import textwrap

import pytest

from engine.config import ConfigError, load_pod_text

FILE = "pods/agent.yaml"
POD = """\
version: v1
kind: Spicepod
name: t
datasets:
  - from: file:customers.csv
    name: customers
views:
  - name: europe
    sql: SELECT * FROM customers
runtime:
  auth:
    principals:
      - name: agent
        keys: ["${env:AGENT_KEY}"]
        attributes: {region: Europe}
        datasets:
"""


def load(datasets: str):
    return load_pod_text(POD + textwrap.indent(textwrap.dedent(datasets), " " * 10), file=FILE, env={"AGENT_KEY": "k"})


def issues(datasets: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load(datasets)
    return [(i.line, i.key, i.message) for i in info.value.issues]


def test_a_valid_policy_loads():
    pod = load("""\
        - name: customers
          filter: "region = {{principal.region}}"
          columns: {email: hash, name: partial(3), phone: hidden, notes: redact, score: "null"}
        - europe
        - "cust*"
        """)
    principal = pod.runtime.auth.principals[0]
    assert principal.name == "agent" and principal.keys == ("k",) and len(principal.datasets) == 3


def test_an_unknown_dataset_says_did_you_mean():
    [(line, key, message)] = issues("- customer\n")
    assert line == 17 and key == "runtime.auth.principals[0].datasets[0]"
    assert "'customer' is not a dataset or view" in message and "did you mean 'customers'?" in message


def test_an_unknown_column_rule_names_the_column_and_the_choices():
    [(line, key, message)] = issues("- name: customers\n  columns: {email: scramble}\n")
    assert line == 18
    assert key.startswith("runtime.auth.principals[0].datasets[0]") and "email" in message
    assert "hidden, null, hash, redact, partial" in message


@pytest.mark.parametrize("bad", ["region = (SELECT 1)", "a; DROP TABLE t", "x = 1 OR", "region IN (SELECT r FROM t)"])
def test_a_row_filter_must_be_one_condition_on_the_datasets_columns(bad):
    found = issues(f'- name: customers\n  filter: "{bad}"\n')
    assert found and "row filter" in found[0][2] and found[0][1].endswith("filter")


def test_a_filter_names_only_attributes_the_principal_has():
    from engine.query.policy import Policy

    pod = load('- name: customers\n  filter: "region = {{principal.team}}"\n')
    with pytest.raises(ValueError, match="no attribute 'team'"):
        Policy.from_config(pod.runtime.auth.principals[0], "salt")
