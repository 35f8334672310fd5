"""A judge option: ``max_lines`` makes a label judge read only a text's first non-blank lines."""

from __future__ import annotations

import pytest

from qdaif.domain import _judge
from qdaif.errors import ConfigError

NODE = {"name": "q", "query": "Poem:\n{text}\nKind:", "labels": [" poem", " other"], "kind": "rating", "values": [10, 1]}


def test_max_lines_keeps_the_first_non_blank_lines():
    spec = _judge({**NODE, "max_lines": 3}, "quality")
    text = "one\ntwo\n\nthree\nfour\n\nfive"
    assert spec.judged_text(text) == "one\ntwo\nthree"
    assert spec.prompt_parts(text) == ("", "Poem:\none\ntwo\nthree\nKind:")
    assert _judge(NODE, "quality").prompt_parts(text) == ("", f"Poem:\n{text}\nKind:")  # 0 (default): all of it


@pytest.mark.parametrize("value", [-1, "many", 1.5])
def test_bad_max_lines_is_a_one_line_error(value):
    with pytest.raises(ConfigError, match=r"quality\.max_lines must be an integer >= 0"):
        _judge({**NODE, "max_lines": value}, "quality")
