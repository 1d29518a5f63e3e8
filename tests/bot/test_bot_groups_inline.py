"""Groups (commands and replies, two people at once) and inline sharing of results."""

from __future__ import annotations

import asyncio
import itertools
import re

from bot_helpers import (
    BotRunner,
    FakeTelegram,
    chat_of,
    find_button,
    image_bytes,
    msg_id,
    param,
    reply_to,
    settle,
    text_of,
    wait_photo,
    wait_text,
)

from nst_core.executor import LocalExecutor


async def test_group_reply_flow_with_two_users(tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict) -> None:
    group = tg.group_chat()
    alice_photo = tg.send_photo(group, alice, image_bytes(seed=1))
    bob_photo = tg.send_photo(group, bob, image_bytes(seed=2))
    # Plain photos in a group are not the bot's business.
    tg.send_text(group, alice, "/stylize starry-night", reply_to=alice_photo["message"])
    bot_name = tg.bot_user["username"]
    tg.send_text(group, bob, f"/stylize@{bot_name}", reply_to=bob_photo["message"])
    (prompt,) = await wait_text(tg, group["id"], "Pick a style")
    assert reply_to(prompt) != msg_id(alice_photo)

    # Alice cannot pick Bob's style; Bob can.
    message, data = find_button(tg, group["id"], "p:great-wave:")
    tg.press_button(message, alice, data)
    await tg.wait_for("answerCallbackQuery", lambda r: "for the person who asked" in text_of(r))
    tg.press_button(message, bob, data)

    results = await wait_photo(tg, group["id"], count=2)
    by_reply = {reply_to(r): text_of(r) for r in results}
    assert set(by_reply) == {msg_id(alice_photo), msg_id(bob_photo)}
    assert "The Starry Night" in by_reply[msg_id(alice_photo)] and "tg://user?id=101" in by_reply[msg_id(alice_photo)]
    assert "Great Wave" in by_reply[msg_id(bob_photo)] and "tg://user?id=202" in by_reply[msg_id(bob_photo)]

    # Another style: in a group a picture is a style only as a reply to the picker, so it says so.
    result, data = find_button(tg, group["id"], "other:")  # the later of the two results
    owner = bob if result["reply_to_message"]["message_id"] == msg_id(bob_photo) else alice
    tg.press_button(result, owner, data)
    (again,) = await wait_text(tg, group["id"], "Pick another style")
    assert "reply to this message with a picture" in text_of(again)


async def test_group_own_style_by_replying_to_the_prompt(
    tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict
) -> None:
    group = tg.group_chat()
    photo = tg.send_photo(group, bob, image_bytes(seed=2))
    tg.send_text(group, bob, "/stylize", reply_to=photo["message"])
    await wait_text(tg, group["id"], "reply to this message with a picture")
    prompt = next(m for m in reversed(tg.messages(group["id"])) if "reply to this message" in m.get("text", ""))
    # Someone else's picture in reply to Bob's prompt was silently ignored (or painted a photo of theirs).
    tg.send_photo(group, alice, image_bytes(seed=3), reply_to=prompt)
    await wait_text(tg, group["id"], "style picker is for someone else's photo")
    tg.send_photo(group, bob, image_bytes(seed=4), reply_to=prompt)
    (result,) = await wait_photo(tg, group["id"])
    assert "🖼 Your own style ·" in text_of(result) and reply_to(result) == msg_id(photo)


async def test_group_style_name_typed_in_reply_to_the_prompt(
    tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict
) -> None:
    """Typing the name in reply to one's own prompt, the natural move there, got no answer."""
    group = tg.group_chat()
    photo = tg.send_photo(group, alice, image_bytes(seed=2))
    tg.send_text(group, alice, "/stylize", reply_to=photo["message"])
    await wait_text(tg, group["id"], "reply to this message with a picture")
    prompt = next(m for m in reversed(tg.messages(group["id"])) if "reply to this message" in m.get("text", ""))
    chatter = tg.send_text(group, alice, "hmm, which one?", reply_to=prompt)  # not a name: left alone
    tg.send_text(group, bob, "starry night", reply_to=prompt)
    await wait_text(tg, group["id"], "style picker is for someone else's photo")
    tg.send_text(group, alice, "starry night", reply_to=prompt)
    (result,) = await wait_photo(tg, group["id"])
    assert "The Starry Night" in text_of(result) and reply_to(result) == msg_id(photo)
    assert not [r for r in tg.calls("sendMessage", group["id"]) if reply_to(r) == msg_id(chatter)]


async def test_an_edit_into_a_command_is_answered_in_a_group(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """A caption edited into /stylize got silence; other edits in a group are not the bot's business."""
    group = tg.group_chat()
    photo = tg.send_photo(group, alice, image_bytes(), caption="look at this")
    tg.edit_message(photo, caption="look at this one")
    tg.edit_message(photo, caption="/stylize the-kiss")
    (answer,) = await wait_text(tg, group["id"], "not edits")
    assert reply_to(answer) == msg_id(photo)
    await settle(0.5)
    assert len(tg.calls("sendMessage", group["id"])) == 1 and not tg.calls("sendPhoto")


async def test_group_photo_captioned_stylize_and_usage_hint(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    group = tg.group_chat()
    tg.send_text(group, alice, "/strength 8")
    await wait_text(tg, group["id"], "Strength set to 8")
    photo = tg.send_photo(group, alice, image_bytes(), caption="/stylize the-scream")
    (result,) = await wait_photo(tg, group["id"])
    assert reply_to(result) == msg_id(photo)
    assert "The Scream" in text_of(result) and "strength 8" in text_of(result) and "Alice" in text_of(result)

    tg.send_text(group, alice, "/stylize")
    await wait_text(tg, group["id"], "Reply to a photo with")

    # /start here told the private chat's way, a photo captioned with a style, which a group ignores.
    tg.send_text(group, alice, "/start")
    (start,) = await wait_text(tg, group["id"], "Hi Alice")
    assert "reply to a photo with <code>/stylize starry-night</code>" in text_of(start)
    assert "Send me a photo" not in text_of(start)

    # So does /styles: its gallery ends with the group's way of using a name.
    tg.send_text(group, alice, "/styles")
    (hint,) = await wait_text(tg, group["id"], "one of these names")
    assert "<code>/stylize starry-night</code>" in text_of(hint) and "caption" not in text_of(hint)

    # And /help, which began with the private chat's photo-then-button way.
    tg.send_text(group, alice, "/help")
    (help_,) = await wait_text(tg, group["id"], "<b>Here in the group</b>")  # /start's says "Here in the group:"
    assert text_of(help_).index("/stylize starry-night") < 120 and "Send a photo, then" not in text_of(help_)
    assert "or send one with that caption" in text_of(help_)  # as /start and the greeting say


async def test_an_album_captioned_stylize_in_a_group_paints_each_picture(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """Only the captioned picture was painted; the rest of the album got no answer at all."""
    group = tg.group_chat()
    photos = [
        tg.send_photo(group, alice, image_bytes(seed=seed), media_group_id="g-album", caption=caption)
        for seed, caption in ((1, "/stylize great-wave"), (2, None), (3, None))
    ]
    # Two at most in the works (the default limit): the third is refused, with the group's way to ask again.
    (limit,) = await wait_text(tg, group["id"], "in the works")
    assert reply_to(limit) == msg_id(photos[2])
    assert "reply to the photo with /stylize" in text_of(limit) and "send the style" not in text_of(limit)
    results = await wait_photo(tg, group["id"], count=2)
    assert all("Great Wave" in text_of(r) for r in results)
    assert {reply_to(r) for r in results} == {msg_id(photos[0]), msg_id(photos[1])}

    # An album without /stylize is the group's own business.
    tg.send_photo(group, alice, image_bytes(seed=4), media_group_id="g-album-2", caption="holiday")
    tg.send_photo(group, alice, image_bytes(seed=5), media_group_id="g-album-2")
    await settle(1.5)
    assert len(tg.calls("sendMessage", group["id"])) == 3  # the two statuses and the refusal above

    # Under privacy mode (Telegram's default; the fake's bot has it on) a bot sees only the
    # captioned picture of an album: that one is painted, and it says how to paint the rest.
    only = tg.send_photo(group, alice, image_bytes(seed=6), media_group_id="g-album-3", caption="/stylize the-kiss")
    (hint,) = await wait_text(tg, group["id"], "only see the captioned picture")
    assert reply_to(hint) == msg_id(only)
    *_, result = await wait_photo(tg, group["id"], count=3)
    assert reply_to(result) == msg_id(only) and "The Kiss" in text_of(result)


async def test_pictures_in_the_works_in_another_chat_are_pointed_to_from_a_group(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """The limit counts every chat, but a group's /queue and /cancel see that group only: the
    refusal said "/cancel", and /cancel then said there was nothing to cancel."""
    runner.overrides.update(max_jobs_per_user=1)
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(400,)))
    private, group = tg.private_chat(alice), tg.group_chat()
    tg.send_photo(private, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, private["id"], "Painting…", method="editMessageText")

    tg.send_photo(group, alice, image_bytes(seed=2), caption="/stylize the-scream")
    (refused,) = await wait_text(tg, group["id"], "in the works")
    assert "in another chat" in text_of(refused) and "private chat with me" in text_of(refused)
    assert "reply to the photo with /stylize" in text_of(refused)
    tg.send_text(group, alice, "/queue")
    (queue,) = await wait_text(tg, group["id"], "nothing in the works here")
    assert "1 picture of yours is in the works in another chat" in text_of(queue)
    assert "Your photo is waiting for its style" in text_of(queue)  # what /cancel drops next
    tg.send_text(group, alice, "/cancel")  # the refused photo, kept for later, goes; the other chat's stays
    (cancel,) = await wait_text(tg, group["id"], "Dropped the photo")
    assert "1 picture of yours is in the works in another chat" in text_of(cancel)
    tg.send_text(group, alice, "/cancel")
    *_, cancel = await wait_text(tg, group["id"], "nothing in the works here", count=2)
    assert "another chat" in text_of(cancel)
    tg.send_text(private, alice, "/cancel")
    await wait_text(tg, private["id"], "Cancelled 1 picture")


async def test_inline_query_lists_the_users_results(tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="the-scream")
    await wait_photo(tg, chat["id"])
    tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    await wait_photo(tg, chat["id"], count=2)
    sent = tg.messages(chat["id"])[-1]
    file_id = sent["photo"][-1]["file_id"]

    # The bot records the result just after Telegram accepts the photo; a person typing
    # "@bot" takes longer than that, so ask again briefly if the first answer was early.
    asked = 0
    for _ in range(20):
        tg.inline_query(alice, "")
        asked += 1
        answer = (await tg.wait_for("answerInlineQuery", count=asked))[-1]
        results = param(answer, "results")
        if len(results) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(results) == 2
    assert results[0]["type"] == "photo" and results[0]["photo_file_id"] == file_id  # the latest first
    assert "Great Wave" in results[0]["caption"]
    assert re.search(r"×\d+$", results[0]["caption"]), results[0]  # no "· 7 s": sent elsewhere, it means nothing

    # What is typed picks by style; it used to be ignored.
    tg.inline_query(alice, "scream")
    asked += 1
    (only,) = param((await tg.wait_for("answerInlineQuery", count=asked))[-1], "results")
    assert "The Scream" in only["caption"]

    tg.inline_query(bob, "")
    answers = await tg.wait_for("answerInlineQuery", count=asked + 1)
    assert param(answers[-1], "results") == []
    assert "open the bot" in param(answers[-1], "button")["text"]


async def test_queue_in_a_group_lists_only_that_groups_pictures(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """/queue in a group listed the asker's private pictures too (there for all to read),
    and /cancel right under it then left those alone."""
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(400,)))
    private, group = tg.private_chat(alice), tg.group_chat()
    tg.send_photo(private, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, private["id"], "Painting…", method="editMessageText")
    tg.send_photo(group, alice, image_bytes(seed=2), caption="/stylize the-scream")
    await wait_text(tg, group["id"], "You're next in the queue")

    tg.send_text(group, alice, "/queue")
    (in_group,) = await wait_text(tg, group["id"], "Your pictures")
    assert "The Scream" in text_of(in_group) and "Starry Night" not in text_of(in_group)
    tg.send_text(private, alice, "/queue")
    (in_private,) = await wait_text(tg, private["id"], "Your pictures")
    assert "The Scream" in text_of(in_private) and "Starry Night" in text_of(in_private)

    tg.send_text(group, alice, "/cancel")
    await wait_text(tg, group["id"], "Cancelled 1 picture")
    tg.send_text(group, alice, "/queue")
    await wait_text(tg, group["id"], "nothing in the works")
    tg.send_text(private, alice, "/cancel")
    await wait_text(tg, private["id"], "Cancelled 1 picture")


async def test_queue_in_a_group_mentions_the_photo_waiting_there_that_cancel_would_drop(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """/queue in a group said 'nothing in the works here', and /cancel right after dropped a
    photo waiting for its style that nobody had mentioned."""
    group = tg.group_chat()
    photo = tg.send_photo(group, alice, image_bytes())
    tg.send_text(group, alice, "/stylize", reply_to=photo["message"])
    await wait_text(tg, group["id"], "Pick a style")
    tg.send_text(group, alice, "/queue")
    (queue,) = await wait_text(tg, group["id"], "nothing in the works")
    assert "Your photo is waiting for its style" in text_of(queue) and "/style" in text_of(queue)
    tg.send_text(group, alice, "/cancel")
    await wait_text(tg, group["id"], "Dropped the photo")


async def test_status_edits_in_a_group_are_paced_together(
    tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict
) -> None:
    """Telegram gives a bot ~20 messages a minute per group: unpaced progress edits of a
    few jobs used them all, and replies and finished pictures waited 10-25 s behind them."""
    runner.overrides.update(status_interval_s=0.0, group_status_interval_s=1.0)
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(30,)))
    group = tg.group_chat()
    tg.send_photo(group, alice, image_bytes(seed=1), caption="/stylize starry-night")
    tg.send_photo(group, bob, image_bytes(seed=2), caption="/stylize great-wave")
    await wait_photo(tg, group["id"], count=2, timeout=90)
    edits = [r for r in tg.calls("editMessageText") if chat_of(r) == group["id"]]
    assert sum("Painting…" in text_of(r) for r in edits) >= 2  # both statuses moved, one edit at a time
    for before, after in itertools.pairwise(edits):
        assert after.at - before.at >= 0.9

    # A private chat is not paced that way: there every step may show.
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=3), caption="starry-night")
    await wait_photo(tg, chat["id"], timeout=60)
    private = [r.at for r in tg.calls("editMessageText") if chat_of(r) == chat["id"]]
    assert min(b - a for a, b in itertools.pairwise(private)) < 0.5


async def test_added_to_a_group_it_says_how_to_use_it_there(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """Added to a group, it said nothing, and plain photos there are ignored: nobody would guess /stylize."""
    group = tg.group_chat()
    tg.bot_membership(group, alice)
    (hello,) = await wait_text(tg, group["id"], "Hi Alice")
    assert "reply to a photo with <code>/stylize starry-night</code>" in text_of(hello)
    tg.bot_membership(group, alice, old="member", new="administrator")  # promoted: no second hello
    tg.bot_membership(group, alice, old="administrator", new="left")
    await settle(0.5)
    assert len(tg.calls("sendMessage", group["id"])) == 1


async def test_anonymous_admins_are_their_group_and_any_admin_there_may_press_their_buttons(
    tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict
) -> None:
    """Telegram sends every anonymous admin's message from one shared account: they shared one set
    of settings across every group, and the buttons under their prompts answered nobody.  A press
    shows the real presser, so the group's admins may act for it, and its other members may not."""
    painters, sculptors = tg.group_chat(-100501, "Painters"), tg.group_chat(-100502, "Sculptors")
    anon_painters, anon_sculptors = tg.anonymous_admin(painters), tg.anonymous_admin(sculptors)
    tg.send_text(painters, anon_painters, "/strength 9")
    await wait_text(tg, painters["id"], "Strength set to 9")
    tg.send_text(sculptors, anon_sculptors, "/settings")
    (panel,) = await wait_text(tg, sculptors["id"], "Settings for posts as Sculptors")
    assert "Strength: 5 " in text_of(panel), "another group's anonymous admins have their own settings"
    message, data = find_button(tg, sculptors["id"], "s:str:+1:")
    tg.press_button(message, alice, data)
    await tg.wait_for("answerCallbackQuery", lambda r: "only the group's admins" in text_of(r))

    photo = tg.send_photo(painters, anon_painters, image_bytes(), caption="/stylize")
    await wait_text(tg, painters["id"], "Pick a style")
    message, data = find_button(tg, painters["id"], "p:the-kiss:")
    tg.press_button(message, alice, data)  # a member, not an admin
    await tg.wait_for("answerCallbackQuery", lambda r: "only the group's admins" in text_of(r), count=2)
    tg.make_admin(painters, bob)
    tg.press_button(message, bob, data)  # Bob may be the admin who posted it, or another: nobody can tell
    (result,) = await wait_photo(tg, painters["id"])
    caption = text_of(result)
    assert reply_to(result) == msg_id(photo)
    assert "The Kiss" in caption and "strength 9" in caption  # the group's anonymous settings
    assert "<b>Painters</b>" in caption and "tg://user" not in caption

    message, data = find_button(tg, painters["id"], "more:")
    tg.press_button(message, alice, data)
    await tg.wait_for("answerCallbackQuery", lambda r: "only the group's admins" in text_of(r), count=3)
    tg.press_button(message, bob, data)
    await tg.wait_for("answerCallbackQuery", lambda r: "stronger" in text_of(r))
    *_, stronger = await wait_photo(tg, painters["id"], count=2)
    assert "strength 10" in text_of(stronger)

    # Two admins' /stylize in turn: the first prompt is closed, saying by whom (not "of yours").
    tg.send_photo(painters, anon_painters, image_bytes(seed=1), caption="/stylize")
    await wait_text(tg, painters["id"], "Pick a style", count=2)
    tg.send_photo(painters, anon_painters, image_bytes(seed=2), caption="/stylize")
    await wait_text(tg, painters["id"], "a newer request posted as this group", method="editMessageText")
