"""Our own posts on screen: matched to the relay's copy by local id, never by their text."""

from __future__ import annotations

from datetime import UTC

from udproom.protocol import events as ev
from udproom.tui import model as m

from .conftest import T0


def joined() -> m.ChatModel:
    chat = m.ChatModel("alice", tz=UTC, clock=lambda: T0)
    chat.apply(ev.RoomJoined("lobby", "alice", (ev.Member("alice"),)))
    return chat


def test_the_copy_of_a_later_post_with_the_same_text_does_not_deliver_a_failed_one():
    chat = joined()
    first = chat.add_own_post("lobby", "ok", False, 1)
    chat.apply(ev.PostFailed(1, "lobby", "no connection to the relay"))
    second = chat.add_own_post("lobby", "ok", False, 2)
    chat.apply(ev.MessageReceived("lobby", 5, "alice", "ok", T0, mine=True, local_id=2))
    assert second.state == m.SENT and second.echoed
    assert first.state == m.FAILED and not first.echoed  # never "delivered" for what was dropped
    assert chat.failed_posts("lobby") == [first]
    mine = [x for x in chat.rooms["lobby"].lines if x.kind <= m.ACTION]
    assert mine == [first, second]  # the copy is not a third line


def test_the_copy_of_an_acknowledged_post_is_matched_by_id_among_equal_texts():
    chat = joined()
    posts = [chat.add_own_post("lobby", "same", False, lid) for lid in (1, 2, 3)]
    for lid in (1, 2, 3):
        chat.apply(ev.PostAcknowledged(lid, "lobby", 10 + lid))
    chat.apply(ev.MessageReceived("lobby", 12, "alice", "same", T0, mine=True, local_id=2))
    assert [p.echoed for p in posts] == [False, True, False]


def test_without_a_local_id_the_copy_is_matched_by_text_as_before():
    chat = joined()
    post = chat.add_own_post("lobby", "hi", False, 1)
    chat.apply(ev.MessageReceived("lobby", 5, "alice", "hi", T0, mine=True))
    assert post.state == m.SENT and post.echoed
    assert [x for x in chat.rooms["lobby"].lines if x.kind <= m.ACTION] == [post]
