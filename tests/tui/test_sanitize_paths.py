"""Every string from others reaches the screen sanitized: not only message text and nicks, but
topics (live and on join), leave reasons, member lists, away messages, nick changes, refusals and
notices. Hostile strings go in through the backend's events; the rendered panes are checked."""

from __future__ import annotations

from udproom.protocol import events as ev

from ..terminal import unsafe
from .conftest import T0, make_app, ready, settle, texts


def evil(tag: str) -> str:
    """A visible tag wrapped in an escape sequence, a C1 CSI, a bidi override and a newline."""
    return f"\x1b[2J{tag}\x9b31m\u202e\n\x07"


def screen(app) -> str:
    parts = [
        *texts(app),
        app.member_list.build().plain,
        app.room_list.build().plain,
        str(app.query_one("#topic").render()),
        str(app.query_one("#status").render()),
    ]
    return "\n".join(parts)


async def test_every_string_from_others_is_sanitized_on_screen():
    app, backend = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot, app, backend)
        seq = iter(range(1000, 2000))
        backend.inject(
            ev.RoomJoined(
                "evil",
                "alice",
                (ev.Member("alice"), ev.Member(evil("memberNick"), away=evil("memberAway"))),
                topic=evil("joinTopic"),
            )
        )
        for e in (
            ev.MemberJoined("evil", next(seq), evil("joinerNick"), T0),
            ev.TopicChanged("evil", next(seq), evil("topicSetter"), evil("liveTopic"), T0),
            ev.AwayChanged("evil", next(seq), evil("awayNick"), evil("awayText"), T0),
            ev.NickChanged("evil", next(seq), evil("joinerNick"), evil("renamedTo"), T0),
            ev.MemberLeft("evil", next(seq), evil("leaver"), T0, reason=evil("leaveReason")),
            ev.MemberTimedOut("evil", next(seq), evil("timedOut"), T0),
            ev.MessageReceived("evil", next(seq), evil("sayer"), evil("saidText"), T0),
        ):
            backend.inject(e)
        backend.inject(ev.RequestRefused("topic", "evil", evil("refusal")))
        backend.inject(ev.Notice(evil("notice"), "evil"))
        await settle(pilot, app)
        await pilot.press("alt+4")  # the new room: its topic, members and scrollback on screen
        await settle(pilot, app)
        assert app.chat.active == "evil"
        shown = screen(app)
        # non-vacuous: every hostile string did reach the screen, visibly
        for tag in (
            "memberNick",
            "liveTopic",
            "topicSetter",
            "awayText",
            "renamedTo",
            "leaveReason",
            "timedOut",
            "saidText",
            "refusal",
            "notice",
        ):
            assert tag in shown, tag
        bad = unsafe(shown.replace("\n", ""))
        assert not bad, sorted(set(bad))
        # and what the model keeps for later rendering is clean too
        room = app.chat.rooms["evil"]
        assert not unsafe(room.topic) and "liveTopic" in room.topic
        assert any("memberAway" in member.away for member in room.members.values())
        for member in room.members.values():
            assert not unsafe(member.nick) and not unsafe(member.away)
        for line in room.lines:
            assert not unsafe(line.text) and not unsafe(line.nick), line


async def test_topic_and_lost_connection_reason_on_the_status_lines():
    app, backend = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot, app, backend)
        backend.inject(ev.TopicChanged("lobby", 500, "bob", evil("statusTopic"), T0))
        backend.inject(ev.ConnectionLost(evil("lostReason"), 1.0))
        await settle(pilot, app)
        topic = str(app.query_one("#topic").render())
        status = str(app.query_one("#status").render())
        assert "statusTopic" in topic and not unsafe(topic)
        assert "lostReason" in status and not unsafe(status)


async def test_failure_and_refusal_reasons_are_sanitized():
    app, backend = make_app(auto_ack=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot, app, backend)
        app.input.value = "hello"
        await pilot.press("enter")
        backend.fail(1, reason=evil("failReason"))
        await settle(pilot, app)
        assert "failReason" in screen(app) and not unsafe(screen(app).replace("\n", ""))
        backend.inject(ev.Refused(evil("refusedReason")))
        await settle(pilot, app)
        shown = screen(app) + "\n".join(line.text for room in app.chat.rooms.values() for line in room.lines)
        assert "refusedReason" in shown and not unsafe(shown.replace("\n", ""))
