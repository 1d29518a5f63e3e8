"""Telegram handlers: parse the update, call the service, reply.  No business rules here.

The conversation is a small state kept in SQLite per (chat, user) — the "draft":
the last photo and whether it still waits for a style.  Keeping it per chat *and*
user means two people in one group never mix up their photos, and keeping it in
SQLite means a restart does not forget a half-finished request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from telegram import (
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultCachedPhoto,
    InlineQueryResultsButton,
    InputMediaPhoto,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import texts
from bot.db import Draft, JobRow
from bot.jobs import SIZE_NAMES, ImageRef, JobService, Prefs, Requester, RequestError
from bot.style_names import find_preset
from nst_core import presets
from nst_core.settings import Quality, StyleSettings

log = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE

#: Some clients send any file as application/octet-stream: its name still says it's a picture.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "avif")
IMAGE = functools.reduce(
    operator.or_,
    (filters.Document.FileExtension(ext) for ext in IMAGE_EXTENSIONS),
    filters.PHOTO | filters.Document.IMAGE,
)
STYLIZE_CAPTION = filters.CaptionRegex(r"^/stylize(@\w+)?(\s|$)")


def service(context: Context) -> JobService:
    return context.application.bot_data["service"]


def author(message: Message) -> tuple[int, str]:
    """Who wrote ``message``, as the bot tells people apart: its id and name.

    An anonymous group admin, or someone posting as a channel, is that chat: Telegram
    shows them all as one shared account, which would give every anonymous admin in
    every group one set of settings, one job limit and each other's buttons.
    """
    if message.sender_chat is not None:
        chat = message.sender_chat
        return chat.id, chat.title or chat.effective_name or texts.ANONYMOUS
    user = message.from_user
    return (user.id, user.full_name) if user is not None else (0, "")


def sender(message: Message) -> Requester:
    """Who sent ``message`` (a private chat's photo, one of an album), where the answer goes."""
    user_id, name = author(message)
    return Requester(user_id, message.chat.id, message.chat.type, name)


def new_draft(who: Requester, ref: ImageRef) -> Draft:
    """``ref`` as the user's waiting photo, with a fresh token for its style buttons."""
    return Draft(who.chat_id, who.user_id, ref.file_id, ref.message_id, secrets.token_hex(4))


def requester(update: Update) -> Requester:
    """Who is asking: a message's author (see ``author``), or whoever pressed a button."""
    chat = update.effective_chat
    assert chat is not None
    if update.callback_query is None and update.effective_message is not None:
        return sender(update.effective_message)
    user = update.effective_user
    assert user is not None
    return Requester(user.id, chat.id, chat.type, user.full_name or user.first_name)


async def acting_for(update: Update, context: Context, owner: int, name: str = "") -> Requester | None:
    """Whom a press of ``owner``'s button (or a reply to ``owner``'s prompt) acts for, or None
    if it is somebody else's.

    A button press shows who pressed, never the anonymous admin or channel (a chat
    id) that asked.  The group's own anonymous posts come from its admins, so any of
    its admins acts for them; a channel's posts answer anyone in the chat.
    """
    who = requester(update)
    if owner == who.user_id:
        return who
    if owner >= 0 or not who.in_group:
        return None
    chat = update.effective_chat
    assert chat is not None
    if owner == chat.id and not await _is_admin(context, chat.id, who.user_id):
        return None
    return Requester(owner, who.chat_id, who.chat_type, name or (chat.title if owner == chat.id else texts.CHANNEL))


ADMIN_CHECK_TTL_S = 60.0
#: A second "Full size" press on one result within this many seconds is a double tap, not a request.
FULL_SIZE_AGAIN_S = 10.0


async def _is_admin(context: Context, chat_id: int, user_id: int) -> bool:
    """Whether ``user_id`` administers ``chat_id`` (asked of Telegram, remembered a minute).

    If Telegram can't say, yes: locking a group's admins out of their own pictures is worse
    than letting a member press their button.
    """
    known: dict[tuple[int, int], tuple[bool, float]] = context.bot_data.setdefault("admins", {})
    hit = known.get((chat_id, user_id))
    if hit is not None and time.monotonic() - hit[1] < ADMIN_CHECK_TTL_S:
        return hit[0]
    try:
        member = await context.bot.get_chat_member(chat_id, user_id)
    except TelegramError as exc:
        log.info("could not tell whether %s administers %s: %s", user_id, chat_id, exc)
        return True
    admin = member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
    if len(known) > 10_000:  # answers a minute old are worth nothing: no need to keep them all
        known.clear()
    known[(chat_id, user_id)] = (admin, time.monotonic())
    return admin


def not_yours(update: Update, owner: int, text: str) -> str:
    """Why a press of ``owner``'s button was refused: ``text``, or that only the group's admins may."""
    chat = update.effective_chat
    return texts.FOR_THE_ADMINS if chat is not None and owner == chat.id else text


def image_ref(message: Message) -> ImageRef | None:
    """The picture in ``message`` (largest photo size, or an image document), if any."""
    if message.photo:
        photo = message.photo[-1]
        return ImageRef(photo.file_id, message.message_id, photo.file_size)
    doc = message.document
    if doc is None:
        return None
    extension = (doc.file_name or "").rpartition(".")[2].lower()
    if (doc.mime_type or "").startswith("image/") or extension in IMAGE_EXTENSIONS:
        return ImageRef(doc.file_id, message.message_id, doc.file_size)
    return None


async def reply(message: Message, text: str, **kwargs: object) -> Message:
    return await message.reply_text(
        text, reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True), **kwargs
    )


def preset_keyboard(token: str, user_id: int) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(_short(p.short_title), callback_data=f"p:{p.slug}:{token}:{user_id}")
        for p in presets.catalog().values()
    ]
    return InlineKeyboardMarkup([buttons[i : i + 2] for i in range(0, len(buttons), 2)])


def _short(title: str, limit: int = 28) -> str:
    title = title.split(" (")[0]
    return title if len(title) <= limit else title[: limit - 1] + "…"


def _draft_is_fresh(draft: Draft | None, context: Context) -> bool:
    ttl = service(context).config.draft_ttl_s
    return draft is not None and time.time() - draft.updated_at < ttl


def _photo_waits(draft: Draft | None) -> bool:
    """Whether ``draft`` is a photo whose style keyboard still waits, however old: its buttons
    paint it, so a typed name, /style, /queue and /cancel see it too."""
    return draft is not None and draft.awaiting_style


def _awaits_style(draft: Draft | None, context: Context) -> bool:
    """Whether ``draft`` is a photo still waiting for its style: then a picture sent is its style."""
    return draft is not None and draft.awaiting_style and _draft_is_fresh(draft, context)


# --- access -------------------------------------------------------------------------------------
async def gate(update: Update, context: Context) -> None:
    """Allow-list check before any other handler (no list = everyone)."""
    user = update.effective_user
    if user is None:
        return
    posted = update.effective_message if update.callback_query is None else None
    asking = author(posted)[0] if posted is not None else user.id
    svc = service(context)
    if any(svc.config.is_allowed(i) for i in (asking, *svc.earlier_ids(asking))):  # a group's id before an upgrade
        return
    if update.callback_query is not None:
        in_group = update.effective_chat is not None and update.effective_chat.type != ChatType.PRIVATE
        await update.callback_query.answer(
            texts.NOT_ALLOWED_IN_GROUP if in_group else texts.NOT_ALLOWED, show_alert=True
        )
    elif update.inline_query is not None:
        await update.inline_query.answer([], cache_time=60, is_personal=True)
    elif update.my_chat_member is not None and _joined(update.my_chat_member):  # else the group hears nothing
        await _say_in(context, update.my_chat_member.chat.id, texts.ADDED_BY_STRANGER)
    elif (message := update.effective_message) is not None and update.effective_chat.type == ChatType.PRIVATE:
        await message.reply_text(texts.NOT_ALLOWED)
    elif message is not None and _asks_me(message, context):  # others in the group may use it
        await message.reply_text(texts.NOT_ALLOWED_IN_GROUP)
    raise ApplicationHandlerStop


# --- commands -------------------------------------------------------------------------------------
async def cmd_start(update: Update, context: Context) -> None:
    assert update.effective_message is not None and update.effective_user is not None
    who = requester(update)
    name = who.name if who.user_id < 0 else update.effective_user.first_name  # "Hi Painters" when anonymous
    waiting = await _waiting_photo_note(who, context)
    await update.effective_message.reply_text(texts.start(name, in_group=who.in_group) + waiting)


async def cmd_help(update: Update, context: Context) -> None:
    assert update.effective_message is not None
    in_group = requester(update).in_group
    sees_all = bool(context.bot.can_read_all_group_messages)
    await update.effective_message.reply_text(
        texts.help_text(context.bot.username or "bot", in_group=in_group, sees_all=sees_all)
    )


async def cmd_style(update: Update, context: Context) -> None:
    """/style [slug]: the style for the last photo (no argument: the keyboard)."""
    message = update.effective_message
    assert message is not None
    who = requester(update)
    draft = await service(context).db.get_draft(who.chat_id, who.user_id)
    if not (_draft_is_fresh(draft, context) or _photo_waits(draft)):
        if who.in_group:
            await reply(message, texts.GROUP_USAGE)
        else:
            await _style_for_next_photo(message, " ".join(context.args or []), context)
        return
    assert draft is not None
    if not context.args:
        await _ask_for_style(message, draft, context, texts.PICK_STYLE_FOR_LAST)
        return
    await _submit_preset(message, who, draft, " ".join(context.args), context)


async def cmd_stylize(update: Update, context: Context) -> None:
    """/stylize [slug] as a reply to a photo (groups), or like /style in a private chat."""
    message = update.effective_message
    assert message is not None
    target = message.reply_to_message
    ref = image_ref(target) if target is not None else None
    if ref is None:
        if update.effective_chat.type == ChatType.PRIVATE:
            await cmd_style(update, context)
        else:
            await reply(message, texts.GROUP_USAGE)
        return
    await _request_from(message, ref, list(context.args or []), context)


def _command(text: str | None, context: Context) -> tuple[str, list[str]] | None:
    """The command (lowercase, without "/") and its words, if ``text`` starts with one for this bot."""
    command, *args = (text or "").split() or [""]
    name, _, addressee = command.partition("@")
    if not name.startswith("/") or (addressee and addressee.lower() != (context.bot.username or "").lower()):
        return None  # /stylize@SomeOtherBot, or no command
    return name[1:].lower(), args


def _asks_me(message: Message, context: Context) -> bool:
    """Whether a group message is one of this bot's commands (the rest of a group is not its business)."""
    command = _command(message.text or message.caption, context)
    return command is not None and command[0] in {name for name, _ in texts.COMMANDS}


def _stylize_args(caption: str | None, context: Context) -> list[str] | None:
    """The words after ``/stylize`` in a caption, or None if it is no /stylize for this bot."""
    command = _command(caption, context)
    return command[1] if command is not None and command[0] == "stylize" else None


async def on_stylize_caption(update: Update, context: Context) -> None:
    """A photo captioned ``/stylize starry-night``: a complete request in one message."""
    message = update.effective_message
    assert message is not None
    ref = image_ref(message)
    args = _stylize_args(message.caption, context)
    if ref is None or args is None:
        return
    if message.media_group_id:  # the album's other pictures come without the caption
        context.application.bot_data["albums"].add(message, context)
        return
    await _request_from(message, ref, args, context)


async def on_group_album_part(update: Update, context: Context) -> None:
    """A picture of an album in a group: kept until the album is whole, in case its caption is /stylize."""
    message = update.effective_message
    assert message is not None
    if message.media_group_id:
        context.application.bot_data["albums"].add(message, context)


async def _request_from(message: Message, ref: ImageRef, args: list[str], context: Context) -> None:
    svc = service(context)
    who = sender(message)
    if not await _image_ok(svc, message, ref):
        return
    draft = new_draft(who, ref)
    await svc.db.save_draft(draft)
    if not args:
        await _ask_for_style(
            message, draft, context, texts.PICK_STYLE_GROUP if who.in_group else texts.PICK_STYLE_FOR_LAST
        )
        return
    await _submit_preset(message, who, draft, " ".join(args), context)


async def _picker_reply(update: Update, context: Context) -> tuple[Requester, Draft] | None:
    """For a reply to the bot's style prompt in a group: whom it acts for and the waiting photo.

    None if it is no such reply, or (told under the reply) the prompt is someone else's or closed.
    """
    message = update.effective_message
    assert message is not None
    target = message.reply_to_message
    if target is None or target.from_user is None or target.from_user.id != context.bot.id:
        return None
    owner = _picker_owner(target)
    if owner is None:
        return None  # a reply to some other message of the bot's: the group's own business
    who = await acting_for(update, context, owner)
    if who is None:  # it painted the replier's own waiting photo, or nothing, silently
        await reply(message, not_yours(update, owner, texts.NOT_YOUR_PROMPT))
        return None
    draft = await service(context).db.get_draft(who.chat_id, who.user_id)
    if not _awaits_style(draft, context):
        await reply(message, texts.PROMPT_CLOSED)
        return None
    return who, draft


async def on_group_style_reply(update: Update, context: Context) -> None:
    """In a group, a picture sent as a reply to the bot's style prompt is the style image."""
    message = update.effective_message
    assert message is not None
    ref = image_ref(message)
    if ref is None or (asked := await _picker_reply(update, context)) is None:
        return
    if not await _image_ok(service(context), message, ref, "style image"):
        return
    await _submit(message, *asked, context, style=ref)


async def on_group_name_reply(update: Update, context: Context) -> None:
    """In a group, a style's name typed as a reply to the bot's style prompt picks that style."""
    message = update.effective_message
    assert message is not None and message.text is not None
    slug, suggestion = find_preset(message.text)
    if slug is None and not suggestion:
        return  # talk in reply to the prompt, not a name: the group's own business
    if (asked := await _picker_reply(update, context)) is None:
        return
    if slug is None:
        await reply(message, texts.unknown_preset(message.text, suggestion))
        return
    await _submit(message, *asked, context, preset=slug)


def _picker_owner(message: Message) -> int | None:
    """Whose style keyboard ``message`` is (its buttons carry the owner's id), if it is one."""
    markup = message.reply_markup
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            parts = str(button.callback_data or "").split(":")
            if parts[0] == "p" and len(parts) == 4 and parts[3].lstrip("-").isdigit():
                return int(parts[3])
    return None


async def _image_ok(svc: JobService, message: Message, ref: ImageRef, what: str = "photo") -> bool:
    """Whether a picture can be painted; if not, the reason is told under ``message``."""
    try:
        await svc.check_image(ref, what)
    except RequestError as exc:  # a refused style leaves the photo waiting: say so, as for a sticker
        await reply(message, f"{exc}\n{texts.PHOTO_STILL_WAITS}" if what == "style image" else str(exc))
        return False
    return True


async def _ask_for_style(message: Message, draft: Draft, context: Context, text: str) -> None:
    draft.awaiting_style = True
    draft.updated_at = time.time()
    await service(context).db.save_draft(draft)
    await _send_prompt(context, draft, reply(message, text, reply_markup=preset_keyboard(draft.token, draft.user_id)))


async def _send_prompt(context: Context, draft: Draft, sending: Awaitable[Message]) -> None:
    """Send a style keyboard for ``draft``, remembered so that it can be closed when the style
    comes another way (a picture, a typed name) or a newer photo takes its place."""
    prompts: dict[tuple[int, int], tuple[str, int]] = context.bot_data["prompts"]
    old = prompts.get((draft.chat_id, draft.user_id))
    if old is not None:  # another photo's, or this one's shown again (/style): one live keyboard
        again = old[0] == draft.token
        await _close_prompt(
            context, draft.chat_id, draft.user_id, old[0], texts.PROMPT_AGAIN if again else _replaced(draft)
        )
    sent = await sending
    prompts[(draft.chat_id, draft.user_id)] = (draft.token, sent.message_id)


async def _close_prompt(context: Context, chat_id: int, user_id: int, token: str, text: str) -> None:
    """Take the buttons off the draft's style keyboard, saying what became of it.

    Left as they were, they looked usable and answered "older message" while the
    photo was already being painted.  Forgotten at a restart; those then say so.
    """
    message_id = _forget_prompt(context, chat_id, user_id, token)
    if message_id is None:
        return
    with contextlib.suppress(TelegramError):
        await context.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)


async def _close_other_prompt(context: Context, draft: Draft) -> None:
    """A keyboard left open for an earlier photo of the user's: ``draft`` takes its place."""
    prompts: dict[tuple[int, int], tuple[str, int]] = context.bot_data["prompts"]
    known = prompts.get((draft.chat_id, draft.user_id))
    if known is not None and known[0] != draft.token:
        await _close_prompt(context, draft.chat_id, draft.user_id, known[0], _replaced(draft))


def _replaced(draft: Draft) -> str:
    return texts.PROMPT_REPLACED_ANONYMOUS if draft.user_id < 0 else texts.PROMPT_REPLACED


def _forget_prompt(context: Context, chat_id: int, user_id: int, token: str) -> int | None:
    """The message id of the draft's remembered style keyboard, no longer remembered."""
    prompts: dict[tuple[int, int], tuple[str, int]] = context.bot_data["prompts"]
    known = prompts.get((chat_id, user_id))
    if known is None or known[0] != token:
        return None
    del prompts[(chat_id, user_id)]
    return known[1]


async def _submit_preset(message: Message, who: Requester, draft: Draft, name: str, context: Context) -> None:
    slug, suggestion = find_preset(name)
    if slug is None:
        await reply(message, texts.unknown_preset(name, suggestion))
        return
    await _submit(message, who, draft, context, preset=slug)


async def _submit(
    message: Message,
    who: Requester,
    draft: Draft,
    context: Context,
    *,
    preset: str | None = None,
    style: ImageRef | None = None,
    then: str | None = None,
    keep_photo: bool = True,
) -> bool:
    """``then``: how to ask again after a refusal, where the default's would mislead;
    ``keep_photo`` False where asking again doesn't go through the waiting photo (an album)."""
    svc = service(context)
    content = ImageRef(draft.content_file_id, draft.content_message_id)
    settings = svc.style_settings(await svc.prefs(who.user_id))
    if await svc.painted_before(who, content.file_id, preset, style.file_id if style else None, settings):
        # Say so rather than paint it the same again (a style typed or picked twice).
        chosen = presets.get(preset).short_title if preset else None
        await reply(message, texts.painted_already(chosen))
        return False
    await _close_other_prompt(context, draft)
    if then is None and style is not None and not who.in_group:
        then = texts.RESEND_STYLE_PICTURE
    try:
        await svc.submit(who, content, preset=preset, style=style, settings=settings, then=then)
    except RequestError as exc:
        # Refused (limits, a failed download): the photo still becomes the waiting one, so
        # the style the user sends later paints *this* photo, not an older one.  Not when it
        # is in the works already: then the next picture would become its style.
        if exc.keeps_photo and keep_photo:
            draft.awaiting_style = True
            draft.updated_at = time.time()
            await svc.db.save_draft(draft)
        await reply(message, str(exc))
        return False
    draft.awaiting_style = False
    draft.updated_at = time.time()
    await svc.db.save_draft(draft)
    chosen = presets.get(preset).short_title if preset else texts.YOUR_PICTURE
    await _close_prompt(context, who.chat_id, who.user_id, draft.token, texts.style_chosen(chosen))
    return True


async def cmd_styles(update: Update, context: Context) -> None:
    """The presets as a photo gallery (uploaded once, then re-sent by Telegram file id)."""
    message = update.effective_message
    assert message is not None
    svc = service(context)
    known = await svc.db.preset_file_ids()
    catalog = list(presets.catalog().values())
    media: list[InputMediaPhoto] = []
    downloads_fail = False
    for p in catalog:
        name = f"<b>{texts.esc(p.short_title)}</b> — {texts.esc(p.artist)}, {texts.esc(p.year)}"
        caption = f"{name}\n<code>{p.slug}</code>"
        source: object = known.get(p.slug)
        if source is None:
            if downloads_fail and not presets.path(p.slug).is_file():
                continue  # one timeout is enough to wait: the text list below names them all
            try:
                source = (await asyncio.to_thread(presets.fetch, p.slug)).read_bytes()
            except presets.PresetError as exc:
                log.warning("preset %s unavailable for the gallery: %s", p.slug, exc)
                downloads_fail = True
                continue
        media.append(InputMediaPhoto(source, caption=caption))  # type: ignore[arg-type]
    sent_ok = False
    for chunk in _chunks(media, 10):
        if len(chunk) < 2:
            break
        try:
            sent = await message.reply_media_group(chunk)
        except TelegramError as exc:
            log.warning("gallery failed: %s", exc)
            break
        sent_ok = True
        for msg in sent:
            if msg.photo and msg.caption:
                slug = msg.caption.rsplit("\n", 1)[-1].strip()
                if slug in presets.catalog() and slug not in known:
                    await svc.db.set_preset_file_id(slug, msg.photo[-1].file_id)
    tail = texts.styles_hint(in_group=message.chat.type != ChatType.PRIVATE)
    await message.reply_text(tail if sent_ok else "Styles:\n" + texts.preset_lines() + "\n\n" + tail)


def _chunks(items: Sequence[InputMediaPhoto], size: int) -> list[list[InputMediaPhoto]]:
    """Split into albums of 2-10 that are as even as possible (an album of one is refused)."""
    n = len(items)
    if n == 0:
        return []
    groups = -(-n // size)
    base, extra = divmod(n, groups)
    out, start = [], 0
    for i in range(groups):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


# --- settings -------------------------------------------------------------------------------------
def settings_view(prefs: Prefs, svc: JobService, who: Requester) -> tuple[str, InlineKeyboardMarkup]:
    """The settings and their buttons; the buttons carry the user's id, whose settings they change
    (in a group anyone can tap them, and must not rewrite somebody else's panel).  In a group the
    panel is public, so it says whose it is."""
    user_id = who.user_id
    text = texts.settings_text(
        prefs.strength,
        prefs.size,
        svc.size_px(prefs.size),
        prefs.quality,
        prefs.colors,
        svc.price(prefs),
        owner=who.name if who.in_group else None,
        anonymous=who.user_id < 0,
    )

    def mark(label: str, on: bool) -> str:
        return f"✓ {label}" if on else label

    def button(label: str, action: str) -> InlineKeyboardButton:
        what, _, value = action.partition(":")
        return InlineKeyboardButton(label, callback_data=f"s:{what}:{value}:{user_id}")

    keyboard = InlineKeyboardMarkup(
        [
            [
                button("− Weaker", "str:-1"),
                button(f"Strength {prefs.strength}", "noop"),
                button("+ Stronger", "str:+1"),
            ],
            [button(mark(n, prefs.size == n), f"size:{n}") for n in SIZE_NAMES],
            [button(mark(q.value, prefs.quality == q.value), f"q:{q.value}") for q in Quality],
            [
                button(f"Keep colours: {'on' if prefs.colors else 'off'}", "col:toggle"),
                button("↺ Reset", "reset"),
            ],
        ]
    )
    return text, keyboard


async def cmd_settings(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    svc = service(context)
    who = requester(update)
    text, keyboard = settings_view(await svc.prefs(who.user_id), svc, who)
    await message.reply_text(text, reply_markup=keyboard)


Parser = Callable[[Prefs, str], tuple[Prefs, str] | None]


async def _change(update: Update, context: Context, usage: str, parse: Parser, *, priced: bool = False) -> None:
    """Shared body of the one-setting commands: parse the argument, save, confirm
    (with what a picture now takes, where the setting changes that)."""
    message = update.effective_message
    assert message is not None
    svc = service(context)
    who = requester(update)
    prefs = await svc.prefs(who.user_id)
    arg = " ".join(context.args or []).strip().lower()
    new = parse(prefs, arg) if arg else None
    if new is None:  # the panel's buttons too: tapping beats retyping a command
        current, keyboard = settings_view(prefs, svc, who)
        said = f"{texts.wont_do(arg)} {usage}" if arg else usage
        await reply(message, f"{said}\n\n{current}", reply_markup=keyboard)
        return
    await svc.save_prefs(who.user_id, new[0])
    cost = svc.price(new[0]) if priced else ""
    await reply(message, f"{new[1]}\n{cost}" if cost else new[1])


async def cmd_strength(update: Update, context: Context) -> None:
    def parse(prefs: Prefs, arg: str) -> tuple[Prefs, str] | None:
        if not re.fullmatch(r"\d{1,2}", arg) or not 1 <= int(arg) <= 10:
            return None
        return Prefs(int(arg), prefs.size, prefs.quality, prefs.colors), texts.setting_saved("Strength", int(arg))

    await _change(update, context, texts.STRENGTH_USAGE, parse)


async def cmd_size(update: Update, context: Context) -> None:
    svc = service(context)

    def parse(prefs: Prefs, arg: str) -> tuple[Prefs, str] | None:
        if arg not in SIZE_NAMES:
            return None
        new = Prefs(prefs.strength, arg, prefs.quality, prefs.colors)
        wanted = {"small": svc.config.size_small, "medium": svc.config.size_medium, "large": svc.config.size_large}
        px = svc.size_px(arg)
        if px < wanted[arg]:
            return new, texts.size_capped(arg, px)
        return new, texts.setting_saved("Size", f"{arg} ({px} px)")

    await _change(update, context, texts.SIZE_USAGE, parse, priced=True)


async def cmd_quality(update: Update, context: Context) -> None:
    def parse(prefs: Prefs, arg: str) -> tuple[Prefs, str] | None:
        if arg not in {q.value for q in Quality}:
            return None
        return Prefs(prefs.strength, prefs.size, arg, prefs.colors), texts.setting_saved("Quality", arg)

    await _change(update, context, texts.QUALITY_USAGE, parse, priced=True)


ON = {"on", "yes", "true", "1", "keep"}
OFF = {"off", "no", "false", "0"}


async def cmd_colors(update: Update, context: Context) -> None:
    def parse(prefs: Prefs, arg: str) -> tuple[Prefs, str] | None:
        if arg not in ON | OFF:
            return None
        on = arg in ON
        return Prefs(prefs.strength, prefs.size, prefs.quality, on), texts.colors_saved(on)

    await _change(update, context, texts.COLORS_USAGE, parse)


async def cmd_reset(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    svc = service(context)
    who = requester(update)
    await svc.save_prefs(who.user_id, Prefs())
    text, keyboard = settings_view(Prefs(), svc, who)
    await reply(message, f"{texts.RESET_DONE}\n\n{text}", reply_markup=keyboard)


async def on_my_membership(update: Update, context: Context) -> None:
    """Added to a group: say hello there, with the group's way of asking (nobody would guess it)."""
    change = update.my_chat_member
    if change is not None and _joined(change):
        await _say_in(context, change.chat.id, texts.start(change.from_user.first_name, in_group=True))


def _joined(change: ChatMemberUpdated) -> bool:
    """Whether this change added the bot to a group (not a promotion, not a private chat)."""
    present = {ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR}
    return (
        change.chat.type != ChatType.PRIVATE
        and change.new_chat_member.status in present
        and change.old_chat_member.status not in present
    )


async def _say_in(context: Context, chat_id: int, text: str) -> None:
    try:
        await context.bot.send_message(chat_id, text)
    except TelegramError as exc:  # a group where it may not post: nothing to say it with
        log.info("could not greet chat %s: %s", chat_id, exc)


async def on_migration(update: Update, context: Context) -> None:
    """A group became a supergroup: its jobs follow it to the new chat id (whoever upgraded it)."""
    message = update.effective_message
    assert message is not None
    if message.migrate_to_chat_id:
        await service(context).chat_migrated(message.chat.id, message.migrate_to_chat_id)
    elif message.migrate_from_chat_id:
        await service(context).chat_migrated(message.migrate_from_chat_id, message.chat.id)
    raise ApplicationHandlerStop


# --- jobs -----------------------------------------------------------------------------------------
async def cmd_cancel(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    who = requester(update)
    svc = service(context)
    n, stopping = await svc.cancel_all(who.user_id, who.chat_id if who.in_group else None)
    # With nothing left to stop, a photo waiting for its style goes: otherwise the next picture
    # becomes its style.  Not at once: a refusal at the limit keeps the photo for after a /cancel.
    draft = await svc.db.get_draft(who.chat_id, who.user_id)
    waiting = _photo_waits(draft)
    if waiting and n:
        said = texts.cancelled_jobs(n, stopping=stopping, unreachable=svc.unreachable)
        await reply(message, f"{said}\n{texts.PHOTO_STILL_WAITING}")
        return
    elsewhere = await svc.active_elsewhere(who.user_id, who.chat_id) if who.in_group and not n else 0
    if not n and not waiting and _next_style(context) is not None:  # "/style x" with no photo yet
        await reply(message, texts.NEXT_STYLE_DROPPED)
        return
    if waiting:
        assert draft is not None
        await svc.db.delete_draft(who.chat_id, who.user_id)  # a typed style name must not paint it either
        await _close_prompt(context, who.chat_id, who.user_id, draft.token, texts.PHOTO_DROPPED)
        await reply(message, texts.photo_dropped(elsewhere))
        return
    said = texts.cancelled_jobs(n, elsewhere=elsewhere, stopping=stopping, unreachable=svc.unreachable)
    if n and (named := _next_style(context, keep=True)) is not None:  # kept, as a waiting photo is
        said += f"\n{texts.style_still_waits(presets.get(named).short_title)}"
    elif not n and not elsewhere and await _sending(svc, who):  # /queue lists it: say why it stays
        said = texts.NOTHING_TO_CANCEL_SENDING
    await reply(message, said)


async def _sending(svc: JobService, who: Requester) -> list[JobRow]:
    """The user's pictures painted but not yet taken by Telegram (here, in a group)."""
    return [
        job
        for job in await svc.db.undelivered_done()
        if job.user_id == who.user_id and (job.chat_id == who.chat_id or not who.in_group)
    ]


async def cmd_queue(update: Update, context: Context) -> None:
    """The same pictures as /cancel's: in a group only that group's, never the private ones."""
    message = update.effective_message
    assert message is not None
    who = requester(update)
    rows = await service(context).queue_of(who.user_id, who.chat_id if who.in_group else None)
    note = await _waiting_photo_note(who, context)
    # Painted but not yet taken by Telegram: not "nothing in the works" (it comes by itself).
    sending = "\n".join(
        f"✅ {texts.esc(texts.style_name(job.style_preset))} — {texts.SENDING_LINE}"
        for job in await _sending(service(context), who)
    )
    if not rows:
        elsewhere = await service(context).active_elsewhere(who.user_id, who.chat_id) if who.in_group else 0
        if sending:
            await reply(message, f"<b>Your pictures</b>\n{sending}{note}")
        else:
            empty = texts.queue_empty(in_group=who.in_group, elsewhere=elsewhere, photo_waits=bool(note))
            await reply(message, empty + note)
        return
    hold = service(context).hold
    names = [texts.style_name(job.style_preset) for job, _, _ in rows]
    strengths = [StyleSettings.from_dict(job.settings).strength for job, _, _ in rows]
    # After Stronger and Weaker, two of one style: the strength tells them apart (where it differs).
    names = [
        f"{name} (strength {strength})"
        if len({s for n, s in zip(names, strengths, strict=True) if n == name}) > 1
        else name
        for name, strength in zip(names, strengths, strict=True)
    ]
    lines = [
        texts.queue_line(i, name, position, eta, hold)
        for i, (name, (_, position, eta)) in enumerate(zip(names, rows, strict=True), 1)
    ]
    sending = f"\n\n{sending}" if sending else ""
    await reply(message, "<b>Your pictures</b>\n" + "\n".join(lines) + "\n\n/cancel to stop them." + sending + note)


async def _waiting_photo_note(who: Requester, context: Context) -> str:
    """A line about the sender's photo that waits for its style here ("" if none): /queue and
    /start ignored it, and only /cancel admitted it was there."""
    draft = await service(context).db.get_draft(who.chat_id, who.user_id)
    if _photo_waits(draft):
        return f"\n\n{texts.PHOTO_WAITS_IN_GROUP if who.in_group else texts.PHOTO_WAITS_HERE}"
    if (named := _next_style(context, keep=True)) is not None:
        return f"\n\n{texts.style_waits_for_photo(presets.get(named).short_title)}"
    return ""


async def cmd_stats(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    svc = service(context)
    if update.effective_user.id not in svc.config.admin_ids:
        await reply(message, texts.ADMIN_ONLY)
        return
    await reply(message, await svc.stats_text())


# --- private chat: pictures, albums, text, everything else -------------------------------------------
@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)


class AlbumCollector:
    """Telegram delivers an album as separate messages; wait briefly, then treat them together."""

    def __init__(self) -> None:
        self._albums: dict[tuple[int, int, str], _Album] = {}

    def add(self, message: Message, context: Context) -> None:
        assert message.from_user is not None and message.media_group_id is not None
        key = (message.chat.id, message.from_user.id, message.media_group_id)
        album = self._albums.get(key)
        if album is None:
            album = self._albums[key] = _Album()
            service(context).spawn(self._finish(key, context))
        album.messages.append(message)

    async def _finish(self, key: tuple[int, int, str], context: Context) -> None:
        await asyncio.sleep(service(context).config.album_wait_s)
        album = self._albums.pop(key)
        messages = sorted(album.messages, key=lambda m: m.message_id)
        if messages[0].chat.type != ChatType.PRIVATE:
            await _group_album(messages, context)
        elif len(messages) == 1 and (args := _stylize_args(messages[0].caption, context)) is not None:
            ref = image_ref(messages[0])
            assert ref is not None
            await _request_from(messages[0], ref, args, context)
        elif len(messages) == 1:
            await _single_picture(messages[0], context)
        else:
            await _album_request(messages, context)


async def _group_album(messages: list[Message], context: Context) -> None:
    """An album in a group: the bot's business only when its caption is /stylize."""
    found = next(((m, a) for m in messages if (a := _stylize_args(m.caption, context)) is not None), None)
    if found is None:
        return
    captioned, args = found
    ref = image_ref(captioned)
    if not args or ref is None:  # no style named: the picker, for the captioned picture
        if ref is not None:
            await _request_from(captioned, ref, args, context)
        return
    slug, suggestion = find_preset(" ".join(args))
    if slug is None:
        await reply(captioned, texts.unknown_preset(" ".join(args), suggestion))
        return
    await _album_in_one_style(messages, slug, context)
    if len(messages) == 1 and not context.bot.can_read_all_group_messages:
        # Privacy mode (Telegram's default) shows a bot only the captioned picture of an album.
        await reply(captioned, texts.ALBUM_IN_GROUP_UNSEEN)


async def _album_request(messages: list[Message], context: Context) -> None:
    """An album of two: the first picture is the photo, the second the style.

    Unless a caption names a painting: then every picture is a photo to paint in it.
    """
    svc = service(context)
    first = messages[0]
    assert first.from_user is not None
    named = _next_style(context)  # a style named before: for this album, or for none
    captioned = next((m for m in messages if m.caption), None)
    if captioned is not None:
        args = _stylize_args(captioned.caption, context)
        name = " ".join(args) if args is not None else captioned.caption or ""
        slug, suggestion = find_preset(name)
        if slug is not None:
            await _album_in_one_style(messages, slug, context)
            return
        if suggestion:  # a misspelt style: asking beats painting one picture in the other's style
            await reply(captioned, texts.unknown_preset(name, suggestion))
            return
    elif named is not None:  # "/style starry-night", then the album
        await _album_in_one_style(messages, named, context)
        return
    refs = [image_ref(m) for m in messages[:2]]
    if refs[0] is None or refs[1] is None:
        await reply(first, texts.NEED_PHOTO)
        return
    if not await _image_ok(svc, first, refs[0], "photo") or not await _image_ok(svc, first, refs[1], "style image"):
        return
    who = sender(first)
    draft = new_draft(who, refs[0])
    if await _submit(first, who, draft, context, style=refs[1]):
        # Said, as under a second photo sent alone: "🖼 Your own style" was all that showed a
        # user who meant "paint both" why only one came back.
        await reply(first, texts.ALBUM_TOO_BIG if len(messages) > 2 else texts.ALBUM_PHOTO_AND_STYLE)


async def _album_in_one_style(messages: list[Message], slug: str, context: Context) -> None:
    """Each picture of the album painted in ``slug``, until the per-user limit says stop."""
    svc = service(context)
    for index, message in enumerate(messages):
        who = sender(message)
        ref = image_ref(message)
        if ref is None:
            continue
        if not await _image_ok(svc, message, ref, "photo"):
            continue
        draft = new_draft(who, ref)
        # Asked again as a whole: kept waiting for a style, this picture made the next one
        # sent (the album's rest, say) its style.
        then = None if who.in_group else texts.RESEND_ALBUM
        if not await _submit(message, who, draft, context, preset=slug, then=then, keep_photo=False):
            # Told why under this picture; the later ones would hear the same, so say it once.
            if rest := sum(image_ref(m) is not None for m in messages[index + 1 :]):
                await reply(message, texts.album_rest_not_started(rest))
            return


async def on_picture(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    if message.media_group_id:
        context.application.bot_data["albums"].add(message, context)
        return
    await _single_picture(message, context)


async def _single_picture(message: Message, context: Context) -> None:
    """A photo in a private chat: a new photo, the style for the waiting one, or a complete request."""
    svc = service(context)
    who = sender(message)
    ref = image_ref(message)
    if ref is None:
        return
    try:
        svc.check_file_size(ref.file_size)
    except RequestError as exc:
        await reply(message, str(exc))
        return
    draft = await svc.db.get_draft(who.chat_id, who.user_id)
    is_style = _awaits_style(draft, context)
    if not await _image_ok(svc, message, ref, "style image" if is_style and not message.caption else "photo"):
        return
    named = _next_style(context)  # a style named before any photo is for this one, or for none
    if message.caption:
        slug, suggestion = find_preset(message.caption)
        if slug is not None or suggestion:
            new = new_draft(who, ref)
            if slug is not None:
                await _submit(message, who, new, context, preset=slug)
            else:
                await svc.db.save_draft(new)
                text = texts.unknown_preset(message.caption, suggestion)
                keyboard = preset_keyboard(new.token, who.user_id)
                await _send_prompt(context, new, reply(message, text, reply_markup=keyboard))
            return
    if is_style:
        assert draft is not None
        if await _submit(message, who, draft, context, style=ref):
            # Said under the picture: otherwise nothing there shows it was taken as a style,
            # not as a second photo to paint (only the prompt above changes).
            await reply(message, texts.USED_AS_STYLE)
        return
    new = new_draft(who, ref)
    if named is not None:  # "/style starry-night" came first
        await _submit(message, who, new, context, preset=named)
        return
    await _ask_for_style(message, new, context, texts.PICK_STYLE)


async def on_text(update: Update, context: Context) -> None:
    """Text in a private chat: a style name for the waiting photo, or a nudge to send a photo."""
    message = update.effective_message
    assert message is not None and message.text is not None
    who = requester(update)
    svc = service(context)
    draft = await svc.db.get_draft(who.chat_id, who.user_id)
    slug, suggestion = find_preset(message.text)
    replied = message.reply_to_message
    ref = image_ref(replied) if replied is not None and replied.from_user is not None else None
    if ref is not None and replied.from_user.id == who.user_id and (slug is not None or suggestion):
        # A style named in reply to one of the user's own photos means that photo, not the latest.
        if slug is None:
            await reply(message, texts.unknown_preset(message.text, suggestion))
            return
        if not await _image_ok(svc, message, ref, "photo"):
            return
        await _submit(message, who, new_draft(who, ref), context, preset=slug)
        return
    # A photo whose keyboard still waits counts however old it is, as the buttons under it do
    # (a later *picture* is a new photo, though: see _awaits_style).
    fresh = _draft_is_fresh(draft, context) or _photo_waits(draft)
    if fresh and draft is not None:
        if slug is not None:
            await _submit(message, who, draft, context, preset=slug)
        elif suggestion:
            await reply(message, texts.unknown_preset(message.text, suggestion))
        elif draft.awaiting_style:  # a short text is a name it doesn't know; a sentence, a question
            short = len(message.text.split()) <= 3
            await reply(message, texts.not_a_style_name(message.text) if short else texts.WAITING_FOR_STYLE)
        else:
            await reply(message, await _nudge(svc, who, last_photo=True))
        return
    if slug is not None:
        await _style_for_next_photo(message, slug, context)
    elif suggestion:  # as /style does: "Did you mean starry-night?"
        await reply(message, texts.unknown_preset(message.text, suggestion))
    else:
        await reply(message, await _nudge(svc, who))


#: ``chat_data`` key of a style named before any photo: (slug, when).  Kept in memory: it is
#: meant for the photo that follows in a minute, not for one sent after a restart.
NEXT_STYLE = "next_style"


async def _style_for_next_photo(message: Message, name: str, context: Context) -> None:
    """A style named with no photo to paint: remembered for the next photo, not forgotten."""
    slug, suggestion = find_preset(name) if name else (None, None)
    if slug is None:
        await reply(message, texts.unknown_preset(name, suggestion) if name else texts.NEED_PHOTO_FIRST)
        return
    assert context.chat_data is not None
    context.chat_data[NEXT_STYLE] = (slug, time.time())
    await reply(message, texts.style_for_next_photo(presets.get(slug).short_title))


def _next_style(context: Context, *, keep: bool = False) -> str | None:
    """The style named for the photo just sent, if one was and is still fresh: used up, unless
    ``keep`` (only looking)."""
    if context.chat_data is None:
        return None
    pending = context.chat_data.get(NEXT_STYLE) if keep else context.chat_data.pop(NEXT_STYLE, None)
    if pending is None:
        return None
    slug, when = pending
    return slug if time.time() - when < service(context).config.draft_ttl_s else None


async def _nudge(svc: JobService, who: Requester, *, last_photo: bool = False) -> str:
    """What to say to text that is no style name: while pictures paint, where to follow them;
    after a result, that a style's name paints that photo again (it would, so say so)."""
    if await svc.db.active_jobs(who.user_id):
        return texts.NEED_PHOTO_BUSY
    return texts.NEW_PHOTO_OR_STYLE if last_photo else texts.NEED_PHOTO


async def _style_awaited(update: Update, context: Context) -> bool:
    """Whether the sender's photo is waiting for its style: then what they send is meant as one."""
    who = requester(update)
    draft = await service(context).db.get_draft(who.chat_id, who.user_id)
    return _awaits_style(draft, context)


async def on_sticker(update: Update, context: Context) -> None:
    assert update.effective_message is not None
    waiting = await _style_awaited(update, context)
    await reply(
        update.effective_message, f"{texts.STICKER_NO_STYLE} {texts.WAITING_FOR_STYLE}" if waiting else texts.STICKER
    )


async def on_other_document(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None and message.document is not None
    doc = message.document
    waiting = await _style_awaited(update, context)
    if message.animation is not None:  # a GIF: Telegram turns it into an MP4, so not "that file"
        await reply(message, f"{texts.ANIMATION_NO_STYLE} {texts.WAITING_FOR_STYLE}" if waiting else texts.ANIMATION)
        return
    await reply(message, texts.not_an_image(doc.mime_type, doc.file_name, waiting=waiting))


async def on_other(update: Update, context: Context) -> None:
    """A voice message, a video, a location...: not a photo, and while a photo waits, not a style."""
    assert update.effective_message is not None
    waiting = await _style_awaited(update, context)
    await reply(
        update.effective_message, f"{texts.NO_STYLE_IN_THAT} {texts.WAITING_FOR_STYLE}" if waiting else texts.NEED_PHOTO
    )


async def on_edited(update: Update, context: Context) -> None:
    """An edited text or caption: acting on it could paint a photo twice, and silence looked like
    the bot had missed it.  In a group only an edit into one of its commands is its business."""
    message = update.effective_message
    assert message is not None
    if message.chat.type == ChatType.PRIVATE or _asks_me(message, context):
        await reply(message, texts.EDIT_IGNORED)


async def on_unknown_command(update: Update, context: Context) -> None:
    assert update.effective_message is not None
    await reply(update.effective_message, "I don't know that command. See /help.")


# --- buttons --------------------------------------------------------------------------------------
async def _answer(query: CallbackQuery, text: str | None = None, *, show_alert: bool = False) -> None:
    """Answer a button press.  One Telegram no longer takes ("query is too old": pressed while
    the bot was down or busy) is let go: what the press asked for is done all the same."""
    try:
        await query.answer(text, show_alert=show_alert)
    except BadRequest as exc:
        log.info("a button press could not be answered: %s", exc)


async def on_callback(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    kind, _, rest = (query.data or "").partition(":")
    handler = _CALLBACKS.get(kind)
    if handler is None or query.message is None or not hasattr(query.message, "chat"):
        await _answer(query, texts.OLD_BUTTON, show_alert=True)
        return
    if kind != "x" and service(context).moved_to(query.message.chat.id):  # Cancel posts nothing: it still works
        await _answer(query, texts.GROUP_UPGRADED, show_alert=True)
        return
    await handler(update, context, rest)


async def _cb_preset(update: Update, context: Context, rest: str) -> None:
    query = update.callback_query
    assert query is not None and query.message is not None
    slug, token, owner = ([*rest.split(":"), "", "", ""])[:3]
    who = await _button_owner(update, context, owner, texts.NOT_YOUR_BUTTON)
    if who is None:
        return
    svc = service(context)
    draft = await svc.db.get_draft(who.chat_id, who.user_id)
    if draft is not None and draft.token == token and not draft.awaiting_style:
        await _answer(query, texts.STYLE_ALREADY_CHOSEN, show_alert=True)
        return
    if draft is None or draft.token != token or not draft.awaiting_style or slug not in presets.catalog():
        await _answer(query, texts.OLD_BUTTON, show_alert=True)
        return
    content = ImageRef(draft.content_file_id, draft.content_message_id)
    _next_style(context)  # a style was picked for a photo: one named earlier is not for the next
    settings = svc.style_settings(await svc.prefs(who.user_id))
    if await svc.painted_before(who, content.file_id, slug, None, settings):  # as a typed name is
        await _answer(query, _plain(texts.painted_already(presets.get(slug).short_title)), show_alert=True)
        return
    try:  # refused, the keyboard stays as it is: pressing it again is the way to ask again
        await svc.submit(who, content, preset=slug, settings=settings, then=texts.PRESS_AGAIN)
    except RequestError as exc:
        await _answer(query, _plain(str(exc)), show_alert=True)
        return
    draft.awaiting_style = False
    await svc.db.save_draft(draft)
    title = presets.get(slug).short_title
    await _answer(query, f"{title} it is!")
    _forget_prompt(context, who.chat_id, who.user_id, token)
    try:  # this very message, whether or not this run of the bot sent it
        await query.edit_message_text(texts.style_chosen(title))
    except TelegramError as exc:
        log.info("could not close the style keyboard: %s", exc)


async def _button_owner(update: Update, context: Context, owner: str, refusal: str) -> Requester | None:
    """Whom a button carrying ``owner`` (a user id, or nothing on old buttons) acts for; see
    ``acting_for``.  If nobody, the press is answered with ``refusal`` (or that it is the admins')."""
    if not owner:
        return requester(update)
    owner_id = int(owner) if owner.lstrip("-").isdigit() else 0
    who = await acting_for(update, context, owner_id) if owner_id else None
    if who is None:
        assert update.callback_query is not None
        await update.callback_query.answer(not_yours(update, owner_id, refusal), show_alert=True)
    return who


async def _own_job(update: Update, job_id: str, context: Context) -> tuple[JobRow, Requester] | None:
    """The job behind a button and whom the press acts for, if the job exists and is the
    presser's (else answers)."""
    query = update.callback_query
    assert query is not None
    job = await service(context).db.get_job(job_id)
    if job is None:
        await _answer(query, texts.OLD_BUTTON, show_alert=True)
        return None
    who = await acting_for(update, context, job.user_id, job.user_name)
    if who is None:
        await _answer(query, not_yours(update, job.user_id, texts.NOT_YOUR_BUTTON), show_alert=True)
        return None
    return job, who


async def _cb_cancel(update: Update, context: Context, job_id: str) -> None:
    query = update.callback_query
    assert query is not None
    owned = await _own_job(update, job_id, context)
    if owned is None:
        return
    job, _ = owned
    svc = service(context)
    if await svc.cancel(job_id):  # not "Cancelling…" beside a status that says "Cancelled."
        await _answer(query, "Cancelling…" if await svc.still_stopping([job_id]) else texts.CANCELLED)
    else:
        await _answer(query, texts.not_cancellable(job.status), show_alert=True)


async def _cb_strength(update: Update, context: Context, job_id: str, delta: int) -> None:
    query = update.callback_query
    assert query is not None
    owned = await _own_job(update, job_id, context)
    if owned is None:
        return
    job, who = owned
    settings = StyleSettings.from_dict(job.settings)
    strength = max(1, min(10, settings.strength + delta))
    if strength == settings.strength:
        await _answer(query, texts.STRONGEST if delta > 0 else texts.WEAKEST, show_alert=True)
        return
    svc = service(context)
    wanted = settings.replace(strength=strength)
    if await svc.painted_before(who, job.content_file_id, job.style_preset, job.style_file_id, wanted):
        await _answer(query, texts.already_painted(strength), show_alert=True)
        return
    style = ImageRef(job.style_file_id, None) if job.style_file_id else None
    try:
        await svc.submit(
            who,
            ImageRef(job.content_file_id, job.content_message_id),
            preset=job.style_preset,
            style=style,
            settings=wanted,
            then=texts.PRESS_AGAIN,
        )
    except RequestError as exc:
        await _answer(query, _plain(str(exc)), show_alert=True)
        return
    await _answer(query, f"Painting it {'stronger' if delta > 0 else 'weaker'}: strength {strength}")


async def _cb_more(update: Update, context: Context, job_id: str) -> None:
    await _cb_strength(update, context, job_id, +2)


async def _cb_less(update: Update, context: Context, job_id: str) -> None:
    await _cb_strength(update, context, job_id, -2)


async def _cb_other(update: Update, context: Context, job_id: str) -> None:
    query = update.callback_query
    assert query is not None and query.message is not None
    owned = await _own_job(update, job_id, context)
    if owned is None:
        return
    job, _ = owned
    _next_style(context)  # a style for this result's photo comes next: one named earlier is dropped
    # Pressed again while its keyboard is open: the same photo's prompt, shown again (not "a newer request").
    old = await service(context).db.get_draft(job.chat_id, job.user_id)
    same = old is not None and old.content_file_id == job.content_file_id and _awaits_style(old, context)
    token = old.token if same and old is not None else secrets.token_hex(4)
    draft = Draft(job.chat_id, job.user_id, job.content_file_id, job.content_message_id, token)
    await service(context).db.save_draft(draft)
    await _answer(query)
    sending = context.bot.send_message(
        job.chat_id,
        texts.ANOTHER_STYLE_GROUP if job.chat_type != "private" else texts.ANOTHER_STYLE,
        reply_parameters=ReplyParameters(query.message.message_id, allow_sending_without_reply=True),
        reply_markup=preset_keyboard(draft.token, job.user_id),
    )
    await _send_prompt(context, draft, sending)


async def _cb_full(update: Update, context: Context, job_id: str) -> None:
    query = update.callback_query
    assert query is not None and query.message is not None
    owned = await _own_job(update, job_id, context)
    if owned is None:
        return
    job, _ = owned
    if not service(context).has_full_size(job):  # said before "Sending…", not after it
        await _answer(query, texts.RESULT_GONE, show_alert=True)
        return
    # A double tap sent the file twice: a second press within a few seconds points to the first.
    sent_at: dict[str, float] = context.bot_data.setdefault("full_size_sent", {})
    now = time.monotonic()
    for stale in [j for j, t in sent_at.items() if now - t >= FULL_SIZE_AGAIN_S]:
        del sent_at[stale]
    if job.id in sent_at:
        await _answer(query, texts.FULL_ALREADY_SENT)
        return
    sent_at[job.id] = now
    # Pressed long ago as far as Telegram knows: "query is too old" mustn't stop the file, nor
    # leave the next press "already on its way".
    await _answer(query, texts.SENDING_FULL)
    sent: bool | None = None
    try:
        sent = await service(context).send_full_size(job, query.message.message_id)
    except TelegramError as exc:  # the press is answered already ("Sending…"): say it here
        log.warning("full-size file of job %s not sent: %s", job.id, exc)
    finally:
        if not sent:  # failed: pressing again must try again, not say it's on its way
            sent_at.pop(job.id, None)
    if sent is None:
        await query.message.reply_text(texts.FULL_NOT_SENT)
    elif not sent:
        await query.message.reply_text(texts.RESULT_GONE)  # removed in between


async def _cb_settings(update: Update, context: Context, rest: str) -> None:
    query = update.callback_query
    assert query is not None
    svc = service(context)
    what, value, owner = ([*rest.split(":"), "", ""])[:3]
    who = await _button_owner(update, context, owner, texts.NOT_YOUR_SETTINGS)
    if who is None:
        return
    user_id = who.user_id
    prefs = await svc.prefs(user_id)
    new = prefs
    if what == "str" and value in ("+1", "-1"):
        new = Prefs(max(1, min(10, prefs.strength + int(value))), prefs.size, prefs.quality, prefs.colors)
    elif what == "size" and value in SIZE_NAMES:
        new = Prefs(prefs.strength, value, prefs.quality, prefs.colors)
    elif what == "q" and value in {q.value for q in Quality}:
        new = Prefs(prefs.strength, prefs.size, value, prefs.colors)
    elif what == "col":
        new = Prefs(prefs.strength, prefs.size, prefs.quality, not prefs.colors)
    elif what == "reset":
        new = Prefs()
    elif what != "noop":
        await _answer(query, texts.OLD_BUTTON, show_alert=True)
        return
    if what == "noop":  # the label between − and +
        await _answer(query, texts.USE_THE_STRENGTH_BUTTONS)
        return
    if new == prefs:
        await _answer(query, {"+1": texts.STRONGEST, "-1": texts.WEAKEST}.get(value, texts.NO_CHANGE))
        return
    await svc.save_prefs(user_id, new)
    text, keyboard = settings_view(new, svc, who)
    await _answer(query, "Saved.")
    try:
        await query.edit_message_text(text, reply_markup=keyboard)
    except TelegramError as exc:
        log.info("settings message not updated: %s", exc)


_CALLBACKS = {
    "p": _cb_preset,
    "x": _cb_cancel,
    "more": _cb_more,
    "less": _cb_less,
    "other": _cb_other,
    "full": _cb_full,
    "s": _cb_settings,
}


def _plain(html_text: str) -> str:
    """Alerts are plain text (and at most 200 characters)."""
    return re.sub(r"<[^>]+>", "", html_text)[:200]


# --- inline mode -----------------------------------------------------------------------------------
async def on_inline(update: Update, context: Context) -> None:
    """``@Bot`` in any chat: the user's recent results, ready to send there."""
    query = update.inline_query
    assert query is not None
    results = [r for r in await service(context).db.recent_results(query.from_user.id, limit=20) if r.file_id]
    # "@Bot scream": those in that style (by their caption), if any; otherwise all of them.
    typed = query.query.strip().lower()
    if typed and (matching := [r for r in results if typed in r.caption.lower()]):
        results = matching
    items = [InlineQueryResultCachedPhoto(id=r.job_id, photo_file_id=r.file_id, caption=r.caption) for r in results]
    button = None if items else InlineQueryResultsButton(text=texts.INLINE_EMPTY_BUTTON, start_parameter="inline")
    await query.answer(items, cache_time=5, is_personal=True, button=button)


# --- errors ---------------------------------------------------------------------------------------
async def on_error(update: object, context: Context) -> None:
    """Log it; tell the user something went wrong (never the details)."""
    if isinstance(context.error, Forbidden):  # blocked the bot / kicked from the group: nobody to tell
        log.info("can't answer an update: %s", context.error)
        return
    if isinstance(context.error, ChatMigrated) and isinstance(update, Update) and update.effective_chat:
        # A group upgraded while nothing of the bot's was in the works there: learnt from the refusal.
        await service(context).chat_migrated(update.effective_chat.id, context.error.new_chat_id)
        if update.callback_query is not None:
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer(texts.GROUP_UPGRADED, show_alert=True)
        return
    if update is None and isinstance(context.error, NetworkError) and not isinstance(context.error, BadRequest):
        # Fetching updates failed (PTB retries with a growing pause): a network fact, not a bug.
        log.warning("cannot reach Telegram for updates (%s); retrying", context.error)
        return
    log.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update):
        if update.callback_query is not None:
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer("Something went wrong on my side; please try again.")
        elif update.effective_message is not None and update.effective_chat is not None:
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text("Something went wrong on my side; please try again.")


def register(app: Application) -> None:
    """Attach every handler; order matters (first match wins within a group)."""
    app.bot_data["albums"] = AlbumCollector()
    app.bot_data["prompts"] = {}  # (chat, user) -> (draft token, style keyboard message id)
    # New messages only: an edited caption must not start a second job.
    private = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, on_migration), group=-2)  # not the gate's
    app.add_handler(TypeHandler(Update, gate), group=-1)
    new = filters.UpdateType.MESSAGE  # an edited command is answered by on_edited, not run again
    app.add_handler(CommandHandler("start", cmd_start, filters=new))
    app.add_handler(CommandHandler("help", cmd_help, filters=new))
    app.add_handler(CommandHandler("style", cmd_style, filters=new))
    app.add_handler(CommandHandler(["styles", "presets", "paintings"], cmd_styles, filters=new))
    app.add_handler(CommandHandler("stylize", cmd_stylize, filters=new))
    app.add_handler(CommandHandler("settings", cmd_settings, filters=new))
    app.add_handler(CommandHandler("strength", cmd_strength, filters=new))
    app.add_handler(CommandHandler("size", cmd_size, filters=new))
    app.add_handler(CommandHandler("quality", cmd_quality, filters=new))
    app.add_handler(CommandHandler(["colors", "colours", "color", "colour"], cmd_colors, filters=new))
    app.add_handler(CommandHandler("reset", cmd_reset, filters=new))
    app.add_handler(CommandHandler("cancel", cmd_cancel, filters=new))
    app.add_handler(CommandHandler("queue", cmd_queue, filters=new))
    app.add_handler(CommandHandler("stats", cmd_stats, filters=new))
    app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & IMAGE & STYLIZE_CAPTION, on_stylize_caption))
    app.add_handler(MessageHandler(private & IMAGE, on_picture))
    app.add_handler(
        MessageHandler(
            filters.ChatType.GROUPS & filters.UpdateType.MESSAGE & filters.REPLY & IMAGE, on_group_style_reply
        )
    )
    app.add_handler(MessageHandler(filters.ChatType.GROUPS & filters.UpdateType.MESSAGE & IMAGE, on_group_album_part))
    group_reply = filters.ChatType.GROUPS & filters.UpdateType.MESSAGE & filters.REPLY
    app.add_handler(MessageHandler(group_reply & filters.TEXT & ~filters.COMMAND, on_group_name_reply))
    app.add_handler(MessageHandler(private & filters.Document.ALL, on_other_document))
    app.add_handler(MessageHandler(private & filters.Sticker.ALL, on_sticker))
    edited = filters.UpdateType.EDITED_MESSAGE
    app.add_handler(MessageHandler(edited & (filters.TEXT | filters.CAPTION), on_edited))  # not live locations
    app.add_handler(MessageHandler(private & filters.COMMAND, on_unknown_command))
    app.add_handler(MessageHandler(private & filters.TEXT, on_text))
    app.add_handler(MessageHandler(private & ~filters.StatusUpdate.ALL & ~filters.UpdateType.EDITED_MESSAGE, on_other))
    app.add_handler(ChatMemberHandler(on_my_membership, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_handler(CallbackQueryHandler(on_callback))
    app.add_handler(InlineQueryHandler(on_inline))
    app.add_error_handler(on_error)
