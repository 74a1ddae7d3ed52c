"""engine/http/textout.py: streamed deltas concatenate to the final text; stops and EOS cut it.

A byte tokenizer (token id = one UTF-8 byte) makes incomplete characters and stop strings split
across tokens happen on purpose. Power: a delta sent too early (half a character, the first
bytes of a stop string) or lost shows up as a concatenation != the expected text.
"""
from __future__ import annotations

import pytest

from engine.http.textout import TextStream


class Bytes:
    def decode(self, ids, skip_special_tokens=True):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


EOS = 300


def stream(text: str, stops=(), chunk=1, eos_after=None, ignore_eos=False):
    ids = list(text.encode())
    if eos_after is not None:
        ids = ids[:eos_after] + [EOS] + ids[eos_after:]
    ts = TextStream(Bytes(), list(stops), EOS, ignore_eos)
    deltas = []
    for i in range(0, len(ids), chunk):
        deltas.append(ts.add(ids[i:i + chunk]))
        if ts.finish_reason:
            break
    deltas.append(ts.flush())
    return ts, deltas


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_utf8_never_split(chunk):
    text = "héllo wörld ✓ ok"
    ts, deltas = stream(text, chunk=chunk)
    assert "".join(deltas) == text == ts.text
    assert all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_stop_string_cut_and_never_leaked(chunk):
    ts, deltas = stream("abc STOP def", stops=["STOP"], chunk=chunk)
    assert "".join(deltas) == "abc " == ts.text
    assert ts.finish_reason == "stop" and ts.stop_reason == "STOP"
    assert not any("S" in d for d in deltas)


def test_stop_prefix_that_does_not_complete_is_released():
    ts, deltas = stream("a STx STOq", stops=["STOP"])
    assert "".join(deltas) == "a STx STOq" and ts.finish_reason is None


def test_eos_ends_unless_ignored():
    ts, deltas = stream("hello world", eos_after=5)
    assert "".join(deltas) == "hello" and ts.finish_reason == "stop" and ts.ids[-1] == EOS
    ts, deltas = stream("hello world", eos_after=5, ignore_eos=True)
    assert "".join(deltas) == "hello world" and ts.finish_reason is None
