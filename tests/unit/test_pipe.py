"""ChunkPipe behaves as paramiko's BufferedPipe: same reads, timeouts, close and event."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from bastionctl.ssh.pipe import ChunkPipe

operations = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.binary(max_size=64)),
        st.tuples(st.just("read"), st.integers(min_value=1, max_value=100)),
        st.tuples(st.just("empty"), st.none()),
        st.tuples(st.just("close"), st.none()),
    ),
    max_size=40,
)


@given(operations)
def test_same_answers_as_buffered_pipe(ops: list[tuple[str, object]]) -> None:
    ours, theirs = ChunkPipe(), BufferedPipe()
    ours_event, theirs_event = threading.Event(), threading.Event()
    ours.set_event(ours_event)
    theirs.set_event(theirs_event)
    for op, arg in ops:
        if op == "feed":
            ours.feed(arg)
            theirs.feed(arg)
        elif op == "read":
            results = []
            for pipe in (ours, theirs):
                try:
                    results.append(pipe.read(arg, timeout=0.0))
                except PipeTimeout:
                    results.append("timeout")
            assert results[0] == results[1]
        elif op == "empty":
            assert ours.empty() == theirs.empty()
        else:
            ours.close()
            theirs.close()
        assert len(ours) == len(theirs)
        assert ours.read_ready() == theirs.read_ready()
        assert ours_event.is_set() == theirs_event.is_set()


def test_a_blocked_read_wakes_on_feed_and_on_close() -> None:
    pipe = ChunkPipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(10)))
    reader.start()
    time.sleep(0.05)
    pipe.feed(b"hello")
    reader.join(timeout=2)
    assert got == [b"hello"]
    reader = threading.Thread(target=lambda: got.append(pipe.read(10)))
    reader.start()
    time.sleep(0.05)
    pipe.close()
    reader.join(timeout=2)
    assert got == [b"hello", b""]


def test_a_read_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        ChunkPipe().read(10, timeout=0.1)
    assert time.monotonic() - started >= 0.09


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def feed(self, chunk: bytes) -> None:
        self.events.append(("feed", chunk))

    def queue(self, chunk: bytes) -> None:
        self.events.append(("queue", chunk))

    def close(self) -> None:
        self.events.append(("close", b""))


def test_redirect_hands_over_what_is_buffered_first_then_every_feed_and_eof() -> None:
    pipe, target = ChunkPipe(), Recorder()
    pipe.feed(b"early")
    pipe.feed(b"er")
    pipe.redirect(target)
    pipe.feed(b"later")
    pipe.close()
    assert target.events == [
        ("queue", b"early"),
        ("queue", b"er"),
        ("feed", b"later"),
        ("close", b""),
    ]
    assert len(pipe) == 0


def test_redirect_after_eof_passes_the_eof_on() -> None:
    pipe, target = ChunkPipe(), Recorder()
    pipe.feed(b"last")
    pipe.close()
    pipe.redirect(target)
    assert target.events == [("queue", b"last"), ("close", b"")]
