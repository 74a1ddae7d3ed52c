"""Incremental detokenization of one request's output, with EOS and stop strings.

    ts = TextStream(tokenizer, stops=["\\n\\n"], eos_id=2, ignore_eos=False)
    delta = ts.add([12, 40])     # text safe to send now ("" while held back)
    ts.finish_reason             # None, or "stop" (EOS / a stop string) once finished
    ts.flush()                   # at the end: whatever was held back

The concatenation of every delta plus flush() equals ts.text, the decoded kept tokens with the
stop string (and anything after it) cut off, as vLLM does by default. Text is held back while it
ends in an incomplete UTF-8 sequence (U+FFFD) or in a prefix of a stop string.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: list[str] | None = None, eos_id: int | None = None, ignore_eos: bool = True):
        self.tokenizer = tokenizer
        self.stops = [s for s in (stops or []) if s]
        self.eos_id = None if ignore_eos else eos_id
        self.ids: list[int] = []  # kept output tokens (an EOS that ended the request included, as vLLM counts it)
        self.text = ""  # decoded kept text (stop string cut off)
        self.sent = 0  # characters of self.text already handed out
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None  # the stop string, or the EOS id, that ended it

    def add(self, new: list[int]) -> str:
        """Take the engine's next tokens; returns the text delta that is safe to send now."""
        if self.finish_reason is not None:
            return ""
        text_ids = [i for i in self.ids if i != self.eos_id]
        for tok in new:
            self.ids.append(tok)
            if tok == self.eos_id:
                self.finish_reason, self.stop_reason = "stop", tok
                break
            text_ids.append(tok)
        full = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        cut = self._stop_at(full)
        if cut is not None:
            full = full[:cut]
        self.text = full
        if self.finish_reason is not None:
            return self.flush()
        return self._safe_delta()

    def _stop_at(self, full: str) -> int | None:
        start = max(0, self.sent - max((len(s) for s in self.stops), default=0))
        best = None
        for s in self.stops:
            i = full.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            return None
        self.finish_reason, self.stop_reason = "stop", best[1]
        return best[0]

    def _safe_delta(self) -> str:
        end = len(self.text)
        while end > self.sent and self.text[end - 1] == "\ufffd":
            end -= 1
        for s in self.stops:  # hold back a tail that may grow into a stop string
            for n in range(min(len(s) - 1, end - self.sent), 0, -1):
                if self.text[end - n:end] == s[:n]:
                    end -= n
                    break
        delta = self.text[self.sent:end]
        self.sent = end
        return delta

    def flush(self) -> str:
        delta = self.text[self.sent:]
        self.sent = len(self.text)
        return delta
