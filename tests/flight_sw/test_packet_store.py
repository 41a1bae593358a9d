"""The onboard packet store (PUS 15, ECSS-E-ST-70-41C 6.15) against a plain list model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.tmtc.packet_store import (
    CONTENT_SUMMARY_STRUCT,
    ENTRY_HEAD,
    STATUS_STRUCT,
    STORE_ID,
    PacketStore,
    StoreCommandError,
)


def _packet(i: int, n: int) -> bytes:
    return bytes([i & 0xFF]) * n


class Model:
    """What the store must behave like: a list, oldest first, trimmed to the capacity."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: list[tuple[int, float, bytes]] = []  # (index, t, packet)
        self.next_index = 0
        self.open = 0
        self.lost = 0

    def store(self, packet: bytes, t: float) -> None:
        self.items.append((self.next_index, t, packet))
        self.next_index += 1
        # the store may hold fewer (space skipped at the end), never more than its capacity
        while sum(ENTRY_HEAD.size + len(p) for _, _, p in self.items) > self.capacity:
            self._drop()

    def _drop(self) -> None:
        index, _, _ = self.items.pop(0)
        if self.open <= index:
            self.lost += 1


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["store", "store", "store", "retrieve"]),
                              st.integers(1, 120)), max_size=300),
       capacity=st.integers(200, 900))
def test_store_keeps_the_newest_packets_in_order_and_counts_every_overwritten_one(ops, capacity):
    store, model = PacketStore(np.zeros(capacity, np.uint8)), Model(capacity)
    t = 0.0
    for op, n in ops:
        t += 1.0
        if op == "store":
            assert store.store(_packet(model.next_index, n), t)
            model.store(_packet(model.next_index, n), t)
            # the store drops an entry only when it had to: it holds a suffix of the model's packets
            while model.items and model.items[0][0] < store.first_index:
                model._drop()
            assert store.first_index == model.items[0][0]
        else:
            if store.retrievable:
                expect = next(p for i, _, p in model.items if i >= model.open)
                got = bytes(store.retrieve_view())
                assert got == expect
                model.open = next(i for i, _, p in model.items if i >= model.open) + 1
            else:
                assert all(i < model.open for i, _, _ in model.items)
        assert store.count == len(model.items)
        assert store.lost == model.lost
        assert store.used <= capacity
    # everything left plays back, oldest first, exactly once
    left = []
    while store.retrievable:
        left.append(bytes(store.retrieve_view()))
    assert left == [p for i, _, p in model.items if i >= model.open]
    assert store.stored == model.next_index


def test_a_packet_longer_than_the_store_is_refused_and_counted():
    store = PacketStore(np.zeros(64, np.uint8))
    assert not store.store(bytes(64), 0.0)
    assert store.refused == 1 and store.count == 0


def test_by_time_range_retrieval_replays_the_range_before_open_retrieval_goes_on():
    store = PacketStore(np.zeros(4096, np.uint8))
    for i in range(10):
        store.store(_packet(i, 20), float(i))
    sent = [bytes(store.retrieve_view())[0] for _ in range(6)]  # open retrieval: 0..5
    store.start_range(2.0, 4.0)
    with pytest.raises(StoreCommandError) as e:
        store.start_range(0.0, 1.0)
    assert e.value.code == "store_busy"
    while store.retrievable:
        sent.append(bytes(store.retrieve_view())[0])
    assert sent == [0, 1, 2, 3, 4, 5, 2, 3, 4, 6, 7, 8, 9]
    assert store.played_back == 13 and not store.range_active


def test_open_retrieval_suspends_resumes_and_moves_its_start():
    store = PacketStore(np.zeros(4096, np.uint8))
    for i in range(5):
        store.store(_packet(i, 8), 10.0 * i)
    store.open_in_progress = False
    assert not store.retrievable
    store.open_in_progress = True
    store.move_open_start(25.0)  # the first packet stored at or after 25 s: index 3
    assert [bytes(store.retrieve_view())[0] for _ in range(2)] == [3, 4]
    assert not store.retrievable
    store.store(_packet(5, 8), 50.0)  # a cursor at the end sees the next packet
    assert bytes(store.retrieve_view())[0] == 5


def test_delete_up_to_a_time_is_not_counted_as_lost():
    store = PacketStore(np.zeros(4096, np.uint8))
    for i in range(6):
        store.store(_packet(i, 8), float(i))
    assert store.delete_up_to(3.0) == 3
    assert store.lost == 0 and store.count == 3
    assert bytes(store.retrieve_view())[0] == 3  # open retrieval continues at the oldest left


def test_reports_follow_the_ecss_layouts():
    """TM[15,13] and TM[15,19] records (ECSS-E-ST-70-41C 8.15.2.8 / 8.15.2.13): store id first."""
    store = PacketStore(np.zeros(1000, np.uint8))
    for i in range(4):
        store.store(_packet(i, 40), 100.0 + i)  # 4 x 50 octets = 20 %
    store.retrieve_view()  # one played back: 15 % still to send
    sid, oldest, newest, open_start, fill, fill_open = CONTENT_SUMMARY_STRUCT.unpack(store.content_summary())
    assert (sid, oldest, newest, open_start, fill, fill_open) == (STORE_ID, 100, 103, 101, 20, 15)
    assert STATUS_STRUCT.unpack(store.status()) == (STORE_ID, 1, 1, 0)


def test_checkpoint_round_trip_continues_identically():
    a = PacketStore(np.zeros(700, np.uint8))
    rng = np.random.default_rng(3)
    for i in range(40):
        a.store(_packet(i, int(rng.integers(5, 90))), float(i))
        if i % 3 == 0 and a.retrievable:
            a.retrieve_view()
    b = PacketStore(a.buf.copy())
    b.load_state_dict(a.state_dict())
    for i in range(40, 60):
        for s in (a, b):
            s.store(_packet(i, 33), float(i))
    out = [[bytes(s.retrieve_view()) for _ in range(s.count) if s.retrievable] for s in (a, b)]
    assert out[0] == out[1] and out[0]
    assert a.state_dict() == b.state_dict()


def test_open_pending_counts_what_open_retrieval_has_still_to_send():
    store = PacketStore(np.zeros(300, np.uint8))
    for i in range(5):
        store.store(_packet(i, 40), float(i))  # 50 octets each: six fit exactly
    store.retrieve_view()
    assert store.open_pending == 4
    for i in range(5, 8):
        store.store(_packet(i, 40), float(i))
    assert store.count == 6 and store.lost == 1 and store.open_pending == 6  # 0 was sent, 1 was not
