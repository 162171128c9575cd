"""SMS end to end: the provider stand-in signs webhooks to the real chat app, the dispatcher
offers the conversation by one-time link over SMS, a responder's phone browser takes it, and
words go both ways; on real Redis and SQLite, with the Asterisk stand-in for a call back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest
from sqlalchemy.orm import Session

from crisisline import db
from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallRecord
from crisisline.stores.texts import messages_key
from smsstandin.server import sign
from tests.text_helpers import ACCOUNT, CSRF, TEXTER, TOKEN, Browser, text_roster, text_system
from textline.sms import SmsClient, SmsError, signature, valid_signature
from web.live import Live

SPANISH = text_roster(("ana", "dot", "en,es", "+16175550101"), ("ben", "dot", "en,es", "+16175550102"),
                      ("dee", "rox", "en", "+16175550103"))
# Boston's languages in menu order: vi is the 8th.
VIETNAMESE = "8"


def rung(system, call_id):
    return [(e["responder"], e["wave"]) for e in system.db.events(call_id)
            if e["type"] == "offer_ringing"]


def take(link: str) -> tuple[Browser, str, str]:
    """A responder's thumb: look at the link (uses nothing), open it, take it."""
    browser = Browser()
    status, page = browser.get(link)
    assert status == 200 and "Someone is waiting by text" in page
    assert browser.get(link)[0] == 200  # a link preview or a second look changes nothing
    status, page = browser.post(link, {})
    assert status == 200 and "Take it" in page, page
    csrf = CSRF.search(page).group(1)
    base = link.rsplit("/r/", 1)[0]
    status, page = browser.post(base + "/r/c/take", {"csrf_token": csrf})
    assert "You are with them" in page
    return browser, csrf, base


def poll(browser: Browser, base: str, csrf: str, after: str = "", wait: float = 5) -> dict:
    import json

    status, body = browser.post(base + "/r/c/poll", {"after": after, "wait": str(wait)},
                                headers={"X-CSRF-Token": csrf})
    assert status == 200, body
    return json.loads(body)


# ---- the provider's signature -----------------------------------------------------------------

def test_signatures_match_the_providers_published_examples() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212", "Caller": "+14158675309"}
    assert signature(url, params, "12345") == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # The stand-in computes it on its own, from lists of values (a repeated parameter).
    assert sign(url, {k: [v] for k, v in params.items()}, "12345") == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = {"Sid": ["CA123"], "SidAccount": ["AC123"], "Digits": ["5678", "1234"]}
    assert signature(url, repeated, "12345") == sign(url, repeated, "12345") == \
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert valid_signature(url, params, "12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature(url, params, "12345", None)
    assert not valid_signature(url, params, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature(url + "&x=1", params, "12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


async def test_webhook_signature_good_bad_missing_replayed(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0) as system:
        before = system.db.client.dbsize()
        # Missing, wrong, made with another token, or for another URL: refused, nothing done.
        assert (await system.text("2", signature=""))[0] == 403
        assert (await system.text("2", signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="))[0] == 403
        forged = sign(system.base + "/sms/inbound", {"From": [TEXTER], "Body": ["2"]}, "wrong-token")
        assert (await system.text("2", signature=forged))[0] == 403
        status, _ = await system.text("2", url=system.base + "/sms/inbound?x=1")
        assert status == 403
        assert system.db.client.dbsize() == before and system.texts_to() == []

        status, sid = await system.text("2")
        assert status == 200
        call_id = system.conversation_of()
        replies = system.texts_to()
        assert len(replies) == 3 and "policía" in replies[0]
        # The provider retries the same message: it is the same message.
        assert (await system.text("2", sid=sid))[0] == 200
        status, sid2 = await system.text("necesito hablar")
        assert (await system.text("necesito hablar", sid=sid2))[0] == 200
        assert system.texts_to() == replies
        words = [m["body"] for _, m in system.db.client.xrange(messages_key(call_id))
                 if m["sender"] == "texter"]
        assert words == ["necesito hablar"]


def test_the_provider_client_against_the_stand_in() -> None:
    from smsstandin.server import SmsStandin

    standin = SmsStandin(ACCOUNT, TOKEN, "http://127.0.0.1:1/sms/inbound").start()
    try:
        sid = SmsClient(standin.url, ACCOUNT, TOKEN, "+16175550151").send("+16175550101", "hi")
        assert sid.startswith("SM") and len(sid) == 34
        sent = standin.messages_to("+16175550101")
        assert [(m.sender, m.body, m.sid) for m in sent] == [("+16175550151", "hi", sid)]
        with pytest.raises(SmsError, match="401"):
            SmsClient(standin.url, ACCOUNT, "not-the-token", "+16175550151").send("+1617", "x")
    finally:
        standin.stop()
    with pytest.raises(SmsError):
        SmsClient("http://127.0.0.1:1", ACCOUNT, TOKEN, "+1", attempts=2).send("+16175550101", "x")


# ---- a conversation ------------------------------------------------------------------------------

async def test_an_sms_texter_and_a_responder_write_both_ways(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0, text_wave_timeout_s=5.0) as system:
        system.standin.set_phones({"+16175550101": "never", "+16175550102": "never"})
        await system.text("Hola, necesito hablar con alguien de mi barrio")
        menu = system.texts_to()[0]
        assert menu.splitlines()[2] == "Para español, responda 2."
        await system.text("2")
        await system.text("02121")  # the ZIP code, while nobody has it yet
        call_id = system.conversation_of()
        await system.calls.start_dispatcher("d1")  # (offers made now know the neighborhood)
        data = system.db.call(call_id)
        assert (data["source"], data["language"], data["neighborhood"]) == ("text", "es", "Dorchester")
        assert data["channel"] == "" and data["x_channel"] == "sms"
        await system.until(lambda: system.link_for("+16175550101") and system.link_for("+16175550102"))
        offer = system.standin.messages_to("+16175550101")[0].body
        assert offer.startswith("Someone is waiting by text, Spanish, Dorchester. Open: http")
        # Nothing the texter wrote reaches a responder's text messages.
        for number in ("+16175550101", "+16175550102", "+16175550103"):
            for m in system.standin.messages_to(number):
                assert "necesito" not in m.body and "barrio" not in m.body
        assert rung(system, call_id)[:2] == [("ana", "1"), ("ben", "1")]

        browser, csrf, base = await system.http(take, system.link_for("+16175550101"))
        assert system.db.call(call_id)["accepted_by"] == "ana"
        assert system.texts_to()[-1] == "Una persona del equipo está con usted ahora."
        # Ben's link now says it was taken, and works for nobody.
        status, page = await system.http(Browser().get, system.link_for("+16175550102"))
        assert "Someone else took it" in page
        seen = await system.http(poll, browser, base, csrf)
        assert [m["body"] for m in seen["messages"] if m["sender"] == "texter"] == [
            "Hola, necesito hablar con alguien de mi barrio", "02121"]

        await system.text("¿Me escucha? <b>sí</b>")
        more = await system.http(poll, browser, base, csrf, seen["after"])
        assert [m["body"] for m in more["messages"]] == ["¿Me escucha? <b>sí</b>"]
        status, _ = await system.http(browser.post, base + "/r/c/send",
                                      {"csrf_token": csrf, "body": "Sí, estoy aquí."})
        assert status == 202 and system.texts_to()[-1] == "Sí, estoy aquí."
        # Another browser (no session) can't read or write it.
        assert (await system.http(Browser().post, base + "/r/c/poll", {"after": ""}))[0] == 403

        status, page = await system.http(browser.post, base + "/r/c/end", {"csrf_token": csrf})
        assert "has ended" in page
        assert "conversation has ended" in system.texts_to()[-1] or "terminó" in system.texts_to()[-1]
        assert system.db.call(call_id)["state"] == "ended"
        assert system.db.client.hget("pr:responder:ana", "on_call_with") == ""
        engine = db.engine_for(system.settings)

        def recorded():
            with Session(engine) as session:
                record = session.get(CallRecord, call_id)
                return record if record and record.outcome == "bridged" and \
                    sql_texts.messages(session, call_id) else None
        record = await system.until(recorded, 10)
        assert (record.source, record.channel, record.answered_by) == ("text", "sms", "ana")
        assert record.time_to_human_s is not None and record.neighborhood == "Dorchester"
        with Session(engine) as session:
            bodies = [(m.sender, m.body) for m in sql_texts.messages(session, call_id)]
        assert ("responder", "Sí, estoy aquí.") in bodies and ("texter", "02121") in bodies
        engine.dispose()


async def test_a_vietnamese_texter_is_offered_to_vietnamese_speakers_first(live_settings) -> None:
    roster = text_roster(("ana", "dot", "en,es", "+16175550101"), ("vu", "rox", "en,vi", "+16175550102"),
                         ("dee", "dot", "en", "+16175550103"))
    async with text_system(live_settings, roster, dispatchers=0, text_wave_timeout_s=1.0) as system:
        system.standin.set_phones({"+16175550102": "never", "+16175550103": "answer:1",
                                   "+16175550101": "never"})
        await system.text(VIETNAMESE)
        assert "cộng đồng" in system.texts_to()[0]
        await system.text("02121")
        call_id = system.conversation_of()
        await system.calls.start_dispatcher("d1")
        await system.until(lambda: system.db.call(call_id).get("state") == "bridged", 20)
        assert rung(system, call_id)[0] == ("vu", "2")  # the speaker, though in the next team
        assert system.db.call(call_id)["accepted_by"] == "dee"
        notes = await system.until(lambda: [e for e in system.db.events(call_id)
                                            if e["type"] == "text_language_note"])
        assert notes and notes[0]["responder"] == "dee" and notes[0]["language"] == "vi"


# ---- keywords, limits ----------------------------------------------------------------------------

async def test_stop_then_nothing_until_start(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0) as system:
        await system.text("hello")
        call_id = system.conversation_of()
        await system.text("STOP")
        assert "no more texts" in system.texts_to()[-1] and "START" in system.texts_to()[-1]
        assert system.settings.line_number in system.texts_to()[-1]
        assert system.db.call(call_id)["state"] == "abandoned"
        assert system.db.call(call_id)["end_reason"] == "stop"
        count = len(system.texts_to())
        await system.text("hello again?")
        assert len(system.texts_to()) == count and system.conversation_of() is None
        await system.text("START")
        assert system.texts_to()[-1].startswith("People's Response text line")


async def test_help_answers_and_keeps_the_words(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0) as system:
        await system.text("2")
        await system.text("help")
        call_id = system.conversation_of()
        assert "apoyo en crisis" in system.texts_to()[-1]  # in Spanish
        assert "STOP" in system.texts_to()[-1] and system.settings.line_number in system.texts_to()[-1]
        words = [m["body"] for _, m in system.db.client.xrange(messages_key(call_id))
                 if m["sender"] == "texter"]
        assert words == ["help"]


async def test_delete_erases_everything_at_once(live_settings) -> None:
    async with text_system(live_settings, SPANISH) as system:
        system.standin.set_phones({}, default="answer:1")
        await system.text("2")
        await system.text("mi hermano me amenaza")
        call_id = system.conversation_of()
        # The responder's first words reach the texter (so nothing is in flight), then DELETE.
        await system.until(lambda: any(t.startswith("Hello, I'm here") for t in system.texts_to()), 20)
        await system.text("DELETE")
        assert system.texts_to()[-1] == "Su conversación ha sido borrada."
        data = system.db.call(call_id)
        assert data["state"] in ("ended", "abandoned") and "caller_number" not in data
        assert not system.db.client.exists(messages_key(call_id))
        assert system.db.client.hget("pr:responder:ana", "on_call_with") in ("", None)
        engine = db.engine_for(system.settings)
        await asyncio.sleep(1.0)  # the recorder's next batches
        with Session(engine) as session:
            record = session.get(CallRecord, call_id)
            assert sql_texts.messages(session, call_id) == []
            assert record is None or (record.caller_number is None and record.zip_code is None)
            if record is not None:
                assert (record.source, record.language) == ("text", "es")
        # The responder's page for it is gone too.
        taker = system.db.call(call_id)["accepted_by"]
        other = {"ana": "+16175550102", "ben": "+16175550101"}[taker]
        _status, page = await system.http(Browser().get, system.link_for(other))
        assert "This conversation has ended" in page
        engine.dispose()


async def test_delete_after_the_conversation_ended_erases_the_last_one(live_settings) -> None:
    async with text_system(live_settings, SPANISH) as system:
        system.standin.set_phones({}, default="answer:1", talk_s=0.1)
        await system.text("2")
        await system.text("palabras privadas")
        call_id = system.conversation_of()
        await system.until(lambda: system.db.call(call_id).get("state") == "ended", 20)
        engine = db.engine_for(system.settings)

        def archived():
            with Session(engine) as session:
                return sql_texts.messages(session, call_id)
        assert await system.until(archived, 10)
        await system.text("DELETE")
        with Session(engine) as session:
            assert sql_texts.messages(session, call_id) == []
            assert session.get(CallRecord, call_id).caller_number is None
        engine.dispose()


async def test_size_and_rate_limits(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0, text_rate_per_address=3,
                           text_max_sms_segments=2) as system:
        await system.text("2")
        call_id = system.conversation_of()
        await system.text("x" * 400)  # three segments
        assert "too long" in system.texts_to()[-1] or "largo" in system.texts_to()[-1]
        await system.text("ok")
        count = len(system.texts_to())
        await system.text("one more")  # the 4th this minute
        assert system.texts_to()[-1].startswith("Están llegando mensajes muy rápido.")
        await system.text("and more")
        assert len(system.texts_to()) == count + 1  # said once a minute, then silence
        words = [m["body"] for _, m in system.db.client.xrange(messages_key(call_id))
                 if m["sender"] == "texter"]
        assert words == ["ok"]


# ---- never silence -------------------------------------------------------------------------------

async def test_with_no_dispatcher_the_queue_shows_it_and_the_texter_gets_the_phone_number(
        live_settings) -> None:
    import redis

    async with text_system(live_settings, SPANISH, dispatchers=0, unattended_s=5) as system:
        await system.text("2")
        call_id = system.conversation_of()
        waiting = Live(redis.Redis.from_url(system.settings.effective_redis_url)).waiting()
        assert [(c.id, c.source, c.language) for c in waiting] == [(call_id, "text", "es")]
        counts = await system.http(system.runtime.run,
                                   system.runtime.upkeep_once(now=time.time() + 6))
        assert counts["unattended"] == 1
        told = system.texts_to()[-1]
        assert system.settings.line_number in told and "llame" in told
        again = await system.http(system.runtime.run,
                                  system.runtime.upkeep_once(now=time.time() + 60))
        assert again["unattended"] == 0  # once
        assert system.db.call(call_id)["state"] == "waiting"  # still in the queue


async def test_nobody_takes_it_the_texter_is_told_and_the_search_goes_on(live_settings) -> None:
    async with text_system(live_settings, SPANISH, text_wave_timeout_s=0.5, max_wait_s=1.5,
                           text_update_s=86400) as system:
        system.standin.set_phones({}, default="never")
        await system.text("2")
        call_id = system.conversation_of()
        await system.until(lambda: len(rung(system, call_id)) >= 2)
        # Pinned: it began ten minutes ago (the record's clock, not the test's).
        system.db.client.hset(f"pr:call:{call_id}", "created_at", f"{time.time() - 600:.3f}")
        told = await system.until(lambda: [t for t in system.texts_to() if "minutos" in t], 20)
        assert len(told) == 1
        assert "10 minutos" in told[0] and system.settings.line_number in told[0]
        assert "seguimos buscando" in told[0]
        # The longest wait is passed, and the search goes on: no fallback group for a text.
        assert await system.until(lambda: system.db.call(call_id).get("search_from"))
        assert system.db.call(call_id)["state"] in ("waiting", "dispatching")
        d = system.calls.dispatchers[0]
        assert await d.give_up(call_id, await d._hash(call_id)) is False
        await d.offer_callback(call_id, await d._hash(call_id))
        assert [t for t in system.texts_to() if "minutos" in t] == told  # not a flood
        assert system.db.call(call_id)["state"] in ("waiting", "dispatching")


async def test_a_dispatcher_killed_mid_offer_loses_nothing(live_settings) -> None:
    async with text_system(live_settings, SPANISH, dispatchers=0, text_wave_timeout_s=3.0) as system:
        system.standin.set_phones({}, default="never")
        first = system.start_dispatcher_process()
        await system.text("2")
        call_id = system.conversation_of()
        await system.until(lambda: system.link_for("+16175550101"), 20)
        first.send_signal(signal.SIGKILL)  # kill -9, mid-offer
        first.wait(5)
        await system.text("sigo aquí")  # written while no dispatcher runs
        system.start_dispatcher_process()
        # Ana's link still opens it; she takes it from the next dispatcher's watch.
        browser, csrf, base = await system.http(take, system.link_for("+16175550101"))
        assert system.db.call(call_id)["accepted_by"] == "ana"
        seen = await system.http(poll, browser, base, csrf)
        assert [m["body"] for m in seen["messages"] if m["sender"] == "texter"] == ["sigo aquí"]
        offers = Counter((e["responder"], e["wave"], e.get("cycle", "")) for e in system.db.events(call_id)
                         if e["type"] == "offer_ringing")
        assert all(n == 1 for n in offers.values()), offers
        await system.until(lambda: system.db.call(call_id).get("owner") not in ("", None), 10)
        await system.http(browser.post, base + "/r/c/end", {"csrf_token": csrf})
        engine = db.engine_for(system.settings)

        def archived():
            with Session(engine) as session:
                return [m.body for m in sql_texts.messages(session, call_id)]
        bodies = await system.until(archived, 20)
        assert "sigo aquí" in bodies
        engine.dispose()


# ---- a text handed to a phone call -------------------------------------------------------------

async def test_a_responder_calls_the_texter_from_the_lines_number(live_settings) -> None:
    async with text_system(live_settings, SPANISH) as system:
        system.standin.set_phones({}, default="never")
        await system.text("2")
        call_id = system.conversation_of()
        await system.until(lambda: system.link_for("+16175550101"))
        browser, csrf, base = await system.http(take, system.link_for("+16175550101"))
        from workers.dispatcher.service import Commands

        commands = asyncio.create_task(Commands(system.calls.dispatchers[0]).run(asyncio.Event()))
        await asyncio.sleep(0.2)  # reading the command stream from its end, as the service does
        status, _page = await system.http(browser.post, base + "/r/c/call", {"csrf_token": csrf})
        assert status == 200
        calling = f"Le estamos llamando ahora desde el {system.settings.line_number}."
        assert await system.until(lambda: system.texts_to()[-1] == calling, 15)
        phones = system.calls.phones

        def legs():
            return [leg for leg in phones.legs if "+17815550142" in leg.dial or "+16175550101" in leg.dial]
        found = await system.until(lambda: len(legs()) == 2, 15)
        assert found, phones.legs
        responder, texter = legs()
        assert "+16175550101" in responder.dial and "+17815550142" in texter.dial  # responder first
        assert texter.ch.caller_id_num == system.settings.line_number  # never the responder's
        await system.until(lambda: [e for e in system.db.events(call_id)
                                    if e["type"] == "text_call_connected"], 15)
        assert responder.rooms and responder.rooms[0] == f"call-{call_id}"
        commands.cancel()


class RecordingAmi:
    """Stands where the AMI gateway does, and only notes what would be sent to Asterisk."""

    def __init__(self) -> None:
        self.handlers: list = []
        self.originate_results: list = []
        self.listening_since = None
        self.sent: list[tuple] = []

    async def setvar(self, *args):
        self.sent.append(("setvar", *args))
        return True

    async def redirect(self, *args, **kw):
        self.sent.append(("redirect", *args))
        return True

    async def hangup(self, *args, **kw):
        self.sent.append(("hangup", *args))

    def originate(self, *args, **kw):
        self.sent.append(("originate", *args))


async def test_a_conversation_never_reaches_asterisk_through_the_dispatcher(settings) -> None:
    """No channel: attend, the callback offer, the fallback move and hanging up a leg are
    never sent to Asterisk for a text; ring makes a link instead of an Originate."""
    import redis.asyncio as aioredis

    from crisisline.call import Call, Source
    from crisisline.stores.calls import CallStore
    from crisisline.stores.offers import OfferStore
    from crisisline.stores.texts import TextStore
    from workers.dispatcher.dispatcher import Dispatcher

    client = aioredis.Redis.from_url(settings.effective_redis_url)
    ami = RecordingAmi()
    d = Dispatcher(settings, CallStore(client), OfferStore(client), ami, lambda: SPANISH)
    store = TextStore(client)
    try:
        await store.create(Call(id="t1", source=Source.TEXT, language="es", priority=2,
                                extra={"channel": "chat", "stage": "open"}))
        await store.queue("t1")
        data = await d._hash("t1")
        await d.attend(data)
        await d.offer_callback("t1", data)
        assert await d.give_up("t1", data) is False
        assert await client.hget("pr:call:t1", "state") == b"waiting"  # the search goes on
        # A desk phone: the offer is a link on the panel. A mobile with no SMS provider
        # configured: the offer can't reach them, so it passes (the wave goes on).
        desk = text_roster(("rosa", "dot", "es", "PJSIP/rosa"))
        for rid, who in (("rosa", desk.responder("rosa")), ("ana", SPANISH.responder("ana"))):
            assert await d.offers.ring("t1", rid, 1, 0)
            d.ring("t1", who, 0, 1, True, 5.0, source="text")
        await asyncio.sleep(0.3)  # offers are made in the background, as an Originate is
        assert await client.hget("pr:text:links:t1", "rosa")
        assert await client.hget("pr:offers:t1", "ana") == b"passed:sms_failed"
        await d.hangup_leg("t1", "rosa")
        assert not await client.hget("pr:text:links:t1", "rosa")
        assert ami.sent == []
    finally:
        await client.aclose()
