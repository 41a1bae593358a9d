"""The framing of the split deployment's socket links (flight_sw.tmtc.link_messages)."""

import pytest

from flight_sw.tmtc.link_messages import (
    RADIO_CADU,
    LinkMessageError,
    MessageReader,
    encode,
    split_timed,
    timed,
)


def test_golden_bytes_of_one_message():
    assert encode(RADIO_CADU, b"\xAB\xCD") == bytes([1, 0, 0, 0, 2, 0xAB, 0xCD])


def test_messages_split_anywhere_are_reassembled_in_order():
    msgs = [(1, b"a" * 300), (2, b""), (3, timed(12.5, b"\x01")), (4, b"xyz")]
    stream = b"".join(encode(k, b) for k, b in msgs)
    for step in (1, 2, 5, 7, len(stream)):
        reader = MessageReader()
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i:i + step])
        assert got == msgs
        assert reader.pending_bytes == 0
    assert split_timed(msgs[2][1]) == (12.5, b"\x01")


def test_a_length_over_the_limit_is_refused_before_anything_is_allocated():
    reader = MessageReader(max_body_bytes=16)
    with pytest.raises(LinkMessageError, match="over the limit"):
        reader.feed(bytes([1, 0, 0, 1, 0]))
    with pytest.raises(LinkMessageError):
        split_timed(b"\x00" * 3)


def test_the_flight_process_retries_the_world_by_count_without_reading_a_clock():
    """`flightsw run` waits for a world that may start later; its retries are counted, and the
    only waiting is the sleep it is handed (flight_sw reads no clock)."""
    import socket

    from flight_sw.cli import RETRY_INTERVAL_S, connect

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept = []
    with pytest.raises(ConnectionError, match=f"tcp://127.0.0.1:{port}: no world"):
        connect("127.0.0.1", port, 4 * RETRY_INTERVAL_S, sleep=slept.append)
    assert slept == [RETRY_INTERVAL_S] * 3
