"""The docs name tests as evidence for the invariants: those tests must exist."""

from __future__ import annotations

import re

import pytest

from tests.deploy.compose import ROOT

DOCS = ["docs/ARCHITECTURE.md", "docs/OPERATOR-RUNBOOK.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_doc_names_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    current: str | None = None
    missing = []
    for token in re.findall(r"`([^`]+)`", text):
        named = re.fullmatch(r"(tests/[\w/]+\.py)(?:::(\w+))?", token)
        if named:
            current = named[1]
            if not (ROOT / current).is_file():
                missing.append(current)
                continue
            test = named[2]
        elif token.startswith("::") and current:
            test = token[2:]
        else:
            continue
        if test and f"def {test}(" not in (ROOT / current).read_text():
            missing.append(f"{current}::{test}")
    assert not missing, f"{doc} names tests that do not exist: {missing}"
