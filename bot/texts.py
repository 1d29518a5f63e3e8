"""Everything the bot says, in one place (HTML parse mode), so wording is reviewed together.

Messages are short, say what happened and what to do next; user-provided text is
always escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from nst_core import presets
from nst_core.executor import Hold

BAR_WIDTH = 10


def esc(text: object) -> str:
    return html.escape(str(text), quote=False)


def preset_lines() -> str:
    return "\n".join(
        f"• <code>{p.slug}</code> — {esc(p.short_title)} ({esc(p.artist)})" for p in presets.catalog().values()
    )


def styles_hint(*, in_group: bool = False) -> str:
    """What to do with the gallery; a group has no photo-then-button flow, only /stylize."""
    if in_group:
        return (
            "Reply to a photo with <code>/stylize</code> and one of these names, "
            "e.g. <code>/stylize starry-night</code>."
        )
    return "Send a photo, then pick one of these — or type its name as the caption."


def start(first_name: str, *, in_group: bool = False) -> str:
    if in_group:  # plain photos in a group are not the bot's business: only replies and captions
        return (
            f"Hi {esc(first_name)}! I paint photos in the style of famous paintings. 🎨\n\n"
            "Here in the group: reply to a photo with <code>/stylize starry-night</code>, "
            "or send a photo captioned <code>/stylize starry-night</code>. "
            "Reply with just /stylize to pick a style from buttons. Results are shared here.\n\n"
            "Styles:\n" + preset_lines() + "\n\nMore: /help"
        )
    return (
        f"Hi {esc(first_name)}! I paint your photos in the style of famous paintings. 🎨\n\n"
        "1. Send me a photo (or an image file, for full quality).\n"
        "2. Pick a style from the buttons — or send a second picture to use as the style.\n\n"
        "Example: send a photo with the caption <code>starry-night</code>.\n\n"
        "Styles:\n" + preset_lines() + "\n\nMore: /help"
    )


def help_text(bot_username: str, *, in_group: bool = False, sees_all: bool = False) -> str:
    """In a group the group's way comes first: plain photos and style names are ignored there.

    ``sees_all``: the bot reads every group message (privacy mode off); only then does it
    see the uncaptioned pictures of an album, so only then is a captioned album promised.
    """
    album = " An album captioned <code>/stylize starry-night</code> paints every picture in it." if sees_all else ""
    how = (
        "reply to a photo with <code>/stylize starry-night</code>, or send one with that caption. "
        "Reply to a photo with just /stylize for buttons to pick from; reply to those with a picture "
        f"to use your own style.{album}\n"
    )
    group = f"<b>In groups</b>: {how}"
    if in_group:
        return (
            "<b>Here in the group</b>\n"
            + how[0].upper()
            + how[1:]
            + "Your settings are yours, the same here and in private: /settings, "
            "/strength 1–10 · /size small|medium|large · /quality fast|balanced|best · /colors on|off · /reset\n"
            "/queue — your pictures in the works here · /cancel — stop them\n"
            f"In a private chat with me (@{esc(bot_username)}) you can also just send photos.\n\n"
            "Styles:\n" + preset_lines()
        )
    return (
        "<b>How it works</b>\n"
        "Send a photo, then pick a style (or send a picture to copy the style from). "
        "An album of two pictures means photo + style; an album captioned with a style name "
        "paints every picture in it. "
        "A photo captioned with a style name, e.g. <code>great-wave</code>, starts at once.\n\n"
        "<b>Commands</b>\n"
        "/style [name] — style for your last photo (sent first: for your next one)\n"
        "/styles — the paintings, with titles and artists\n"
        "/settings — strength, size, quality, colours\n"
        "/strength 1–10 · /size small|medium|large · /quality fast|balanced|best · /colors on|off · /reset\n"
        "/queue — your pictures in the works · /cancel — stop them (then the photo waiting for its style, "
        "or a style named for the next one)\n\n"
        + group
        + f"<b>Share</b>: type <code>@{esc(bot_username)}</code> in any chat to send one of your results.\n\n"
        "Styles:\n" + preset_lines()
    )


COMMANDS: list[tuple[str, str]] = [
    ("start", "What this bot does"),
    ("help", "How to use it"),
    ("style", "Pick a style for your last (or next) photo"),
    ("styles", "Show the paintings"),
    ("stylize", "In groups: reply to a photo"),
    ("settings", "Strength, size, quality, colours"),
    ("strength", "How strong the style is (1-10)"),
    ("size", "small, medium or large"),
    ("quality", "fast, balanced or best"),
    ("colors", "Keep the photo's colours: on or off"),
    ("reset", "Back to the default settings"),
    ("queue", "Your pictures in the works"),
    ("cancel", "Stop your pictures in the works"),
]

# --- the conversation -------------------------------------------------------------------------
PICK_STYLE = "Nice photo! Now pick a style — or send me a picture to copy the style from."
YOUR_PICTURE = "Your own style"
PROMPT_REPLACED = "Closed: a newer request of yours took this one's place."
PROMPT_AGAIN = "Closed: the same buttons are below."
#: ...when it was posted as the group (anonymous admins share that one identity).
PROMPT_REPLACED_ANONYMOUS = "Closed: a newer request posted as this group took this one's place."
#: A button under a message from before the group became a supergroup: Telegram refuses to post there.
GROUP_UPGRADED = (
    "This group was upgraded to a supergroup since, and I can't post under messages from before that. "
    "Send the photo again, or use the buttons under newer pictures."
)
NOT_ALLOWED_IN_GROUP = "Sorry, only some people may use this bot."
ADDED_BY_STRANGER = (
    "Hello! Only some people may use this bot, so I'll paint here only when one of them asks. "
    "Its owner can let others in."
)
STYLE_ALREADY_CHOSEN = (
    "You already picked a style for this photo. For another one as well, "
    "use 🎨 Another style under the result, or send the photo again."
)


def style_chosen(title: str) -> str:
    return f"Style: <b>{esc(title)}</b> ✓"


PICK_STYLE_FOR_LAST = "Pick a style for your last photo:"
PICK_STYLE_GROUP = "Pick a style — or reply to this message with a picture to copy the style from."


def style_for_next_photo(title: str) -> str:
    return f"<b>{esc(title)}</b> it is: now send me the photo to paint. 📷"


NEXT_STYLE_DROPPED = "OK, forgot the style you picked: the next photo gets the style buttons. ✋"
NEED_PHOTO_FIRST = "Send me a photo first, then pick a style. 📷"
NEED_PHOTO = "I need a photo to paint. 📷 Send one (or an image file) — see /help."
NEW_PHOTO_OR_STYLE = "Send me a new photo 📷, or type a style's name (see /styles) to paint your last one in it."
NEED_PHOTO_BUSY = "Your pictures are in the works: /queue says how far along they are. Send another photo any time. 📷"
USED_AS_STYLE = (
    "🎨 I'm using this picture as the style for your photo above. "
    "Meant to paint it instead? Cancel that one and send this again."
)


NOTHING_TO_CANCEL_SENDING = (
    "Nothing left to cancel: your picture is painted, and I'm sending it as soon as Telegram takes it."
)


def style_still_waits(title: str) -> str:
    return f"🎨 <b>{esc(title)}</b> still waits for your next photo: /cancel again to forget it."


def style_waits_for_photo(title: str) -> str:
    return f"🎨 <b>{esc(title)}</b> waits for your next photo (/cancel forgets it)."


#: Not "pick one under it": a photo kept after a refusal (a limit) has no buttons under it.
PHOTO_WAITS_HERE = (
    "📷 Your last photo is waiting for its style: send a style's name or a picture "
    "(/style shows the buttons), or /cancel to drop it."
)
PHOTO_WAITS_IN_GROUP = "📷 Your photo is waiting for its style: /style shows the buttons, or /cancel drops it."
PHOTO_STILL_WAITS = "Your photo still waits for its style."
WAITING_FOR_STYLE = (
    "I have your photo and I'm waiting for a style: tap one of the buttons above, "
    "type a style name like <code>starry-night</code>, or send a picture to copy the style from."
)
STICKER = "Stickers are fun, but I can only paint photos. 📷 Send me a photo."
#: What can't be a style, said while a photo waits for one (so another photo isn't sent as a "photo").
STICKER_NO_STYLE = "I can't copy a style from a sticker."
ANIMATION = "That's an animation, and I can only paint still pictures. 📷 Send me a photo (a screenshot of it will do)."
ANIMATION_NO_STYLE = "I can't copy a style from an animation."
NO_STYLE_IN_THAT = "I can't copy a style from that."
GROUP_USAGE = (
    "Reply to a photo with <code>/stylize starry-night</code>, or reply to it with just /stylize to pick a style."
)
ALBUM_PHOTO_AND_STYLE = (
    "🎨 I'm using the album's second picture as the style for the first. "
    "To paint both instead, send them again with a style's name as the caption, e.g. <code>starry-night</code>."
)
ALBUM_TOO_BIG = (
    "I used the first two pictures of the album: the photo and the style. "
    "To paint every picture in it, send the album again with a style's name as its caption, "
    "e.g. <code>starry-night</code>."
)


def album_rest_not_started(n: int) -> str:
    if n == 1:
        return "The album's last picture wasn't started either: send it again later with the same caption."
    return (
        f"The album's {n} pictures after this one weren't started either: send them again later with the same caption."
    )


ALBUM_IN_GROUP_UNSEEN = (
    "In a group I only see the captioned picture of an album. "
    "To paint the others too, reply to each with <code>/stylize</code> and the style's name."
)
OLD_BUTTON = "That button belongs to an older message. Send the photo again to start over."
NOT_YOUR_BUTTON = "That button is for the person who asked."
FOR_THE_ADMINS = "That was posted as the group, by one of its admins: only the group's admins can use it."
NOT_YOUR_PROMPT = (
    "That style picker is for someone else's photo. To paint a photo of yours, reply to your photo with /stylize."
)
PROMPT_CLOSED = "That photo isn't waiting for a style any more. Reply to it with /stylize to paint it again."
NOT_YOUR_SETTINGS = "These are someone else's settings. Send /settings for yours."
NOT_ALLOWED = "Sorry, this bot is private."
ADMIN_ONLY = "That command is for the bot's admins."


def unknown_preset(name: str, suggestions: Sequence[str] = ()) -> str:
    names = " or ".join(f"<code>{esc(slug)}</code>" for slug in suggestions)
    hint = f" Did you mean {names}?" if names else ""
    return f"I don't know a style called “{esc(name)}”.{hint} See /styles for the list."


def not_a_style_name(name: str) -> str:
    """Said to a short text while a photo waits for its style."""
    return f"I don't know a style called “{esc(name)}”. {WAITING_FOR_STYLE}"


def not_an_image(mime: str | None, file_name: str | None, *, waiting: bool = False) -> str:
    """``waiting``: a photo is waiting for its style, which this file can't be either."""
    what = "That file"
    if mime == "application/pdf" or (file_name or "").lower().endswith(".pdf"):
        what = "That's a PDF, and it"
    if waiting:
        return f"{what} isn't an image I can copy a style from. {WAITING_FOR_STYLE}"
    return f"{what} isn't an image I can paint. Please send a JPEG or PNG photo. 📷"


def file_too_big(size: int, limit: int) -> str:
    return (
        f"That file is {size / 1024 / 1024:.1f} MB; I can only download files up to {limit / 1024 / 1024:.0f} MB. "
        "Send it as a photo (Telegram shrinks it) or a smaller file."
    )


def bad_image(reason: str) -> str:
    return f"I couldn't use that picture: {esc(reason)}. Please send another one."


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10e6 else f"{pixels / 1e6:.2g}"


def too_many_pixels(width: int, height: int, limit: int) -> str:
    return (
        f"That picture is {width}×{height} — {_mp(width * height)} megapixels, more than the "
        f"{_mp(limit)} I can take. Please send a smaller one."
    )


HEIC_AS_PHOTO = (
    "That's a HEIC file (the iPhone's format), which I can't read here. Send it as a photo instead of a file: "
    "Telegram turns it into a JPEG. 📷"
)
DOWNLOAD_FAILED = "I couldn't download that file from Telegram. Please send it again."

# --- jobs -------------------------------------------------------------------------------------


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "a moment"
    # Rounded up (a time over a limit must not read as equal to it).  Seconds up to 99: in whole
    # minutes, 61 s read "2 min", and 59.5 s "60 s" a moment before "2 min".
    if math.ceil(seconds) < 100:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


#: Under a hold, a guessed time would be replaced by a very different one, or never come true.
_HELD = {
    Hold.WARMING_UP: "I'm just warming up; how long it will take follows in a few seconds.",
    Hold.NO_WORKER: "No painter is online right now, so I can't say how long; it starts as soon as one is back.",
}
_HELD_LINE = {
    Hold.WARMING_UP: "how long follows once I've warmed up, in a few seconds",
    Hold.NO_WORKER: "waiting for a painter to come online",
    Hold.UNREACHABLE: "the painters are briefly out of reach, so I can't say how long",
}


ANONYMOUS = "Anonymous"
CHANNEL = "Channel"  # a button press on the prompt of someone posting as a channel: its title is unknown there


def status_heading(name: str) -> str:
    """Heads a status message that cannot reply to its photo (the group became a supergroup)."""
    return f"For <b>{esc(name or 'someone')}</b> (photo sent before this group was upgraded):\n"


def small_photo(width: int, height: int, size: int) -> str:
    """Heads the status of a photo enlarged more than twice: the user can still cancel and send a bigger one."""
    return (
        f"ℹ️ Your photo is only {width}×{height} pixels, so painted at {size} px it will look soft; "
        "a larger photo paints sharper.\n"
    )


PAINTING_OUT_OF_REACH = (
    "🎨 Painting… the painters are briefly out of reach, so I can't show how far along it is; it carries on."
)


def queued(position: int, eta_s: float | None, hold: Hold | None = None) -> str:
    if position == 0 and hold is Hold.UNREACHABLE:  # painting, not waiting: its worker carries on
        return PAINTING_OUT_OF_REACH
    place = "You're next in the queue" if position <= 1 else f"In the queue: #{position}"
    if hold is not None and hold is not Hold.UNREACHABLE:
        return f"🕐 {place}. {_HELD[hold]}"
    if eta_s is None:  # the executor can't reach its queue right now (its place too); the job is safe
        return "⏳ Your picture is safe in the queue; the painters are briefly out of reach. It will continue shortly."
    return f"🕐 {place}. Ready in about {minutes(eta_s)}."


def progress_bar(fraction: float) -> str:
    filled = max(0, min(BAR_WIDTH, round(fraction * BAR_WIDTH)))
    return "▓" * filled + "░" * (BAR_WIDTH - filled)


def painting(fraction: float, eta_s: float | None) -> str:
    pct = max(0, min(100, int(fraction * 100)))
    left = f" · about {minutes(eta_s)} left" if eta_s is not None and fraction < 1 else ""
    return f"🎨 Painting… {pct}%\n{progress_bar(fraction)}{left}"


RESTARTED = "♻️ I restarted; your picture is still in the queue."  # kept in SQLite, or in Redis
STILL_PAINTING = "🎨 Painting… (I restarted meanwhile; the painter carried on)"
REQUEUED = "♻️ The queue lost your picture, so I put it back in line."
#: Its painter may well carry on and deliver it first: "lost" would be too sure.
REQUEUED_WHILE_PAINTING = (
    "♻️ The queue lost track of your picture; I've put it back in line in case its painter stopped."
)
SENDING_LINE = "painted; I'm sending it as soon as Telegram takes it"
SENDING_DELAYED = "✅ Painted! Telegram isn't taking the picture right now; I'll keep trying to send it."
DELIVERY_REFUSED = "it was painted, but Telegram refused to take the finished picture"
RESULT_NOT_STORED = "it was painted, but the server could not store the finished picture"
CANCELLED = "Cancelled. ✋"
CANCELLING = "✋ Cancelling… the painter stops after its current step."
#: While the queue is out of reach the painter can't hear the cancel: it may finish the picture,
#: which is then not sent.
CANCELLING_HELD = (
    "✋ Cancelling… the queue is out of reach for a moment: the painter stops once it's back, and nothing is sent."
)
CANCELLING_TEXTS = (CANCELLING, CANCELLING_HELD)
USER_BLOCKED = "user blocked the bot"


def failed(reason: str, *, too_slow: bool = False) -> str:
    """``too_slow``: the time limit stopped it, and the same settings would only fail again."""
    if too_slow:
        return (
            f"😞 Sorry, I couldn't paint this one: {esc(reason)}.\n"
            "A smaller /size or a faster /quality paints quicker: change one, then ask again."
        )
    return (
        f"😞 Sorry, I couldn't paint this one: {esc(reason)}.\nYour settings and other pictures are fine — try again?"
    )


#: How to ask again after a refusal, for a request that came from a photo and a style...
RESEND_STYLE = "I've kept this photo: then just send the style (or its name) again."
#: ...when the refused message was itself the style picture (it is not the photo that was kept)...
RESEND_STYLE_PICTURE = (
    "I've kept your photo from before this picture: then send this picture (or a style's name) again."
)
#: ...for a picture of an album captioned with a style (each picture is a photo to paint)...
RESEND_ALBUM = "Then send this picture again with the same caption."
#: ...in a group, where a typed style name is not the bot's business...
RESEND_IN_GROUP = "Then reply to the photo with /stylize and the style's name again."
#: ...or from a button under a result (sending the style again would lose the button's setting).
PRESS_AGAIN = "Then press the button again."
ALREADY_IN_THE_WORKS = (
    "That one is already in the works: the same photo, style and settings. It comes as soon as it's done."
)


def _pictures(n: int) -> str:
    return f"{n} picture{'s' if n != 1 else ''}"


#: Where a user's pictures in other chats can be seen and stopped: /queue and /cancel in
#: a group cover that group only, in a private chat they cover every chat.
ALL_CHATS = "/queue and /cancel in a private chat with me cover them all."


def too_many_jobs(limit: int, then: str = RESEND_STYLE, *, elsewhere: int = 0) -> str:
    """``elsewhere``: how many of them are in other chats, where this chat's /cancel cannot reach."""
    if elsewhere >= limit:
        return (
            f"You already have {_pictures(limit)} in the works in another chat. "
            f"Wait for one to finish; {ALL_CHATS}\n{then}"
        )
    return f"You already have {_pictures(limit)} in the works. Wait for one to finish, or /cancel.\n{then}"


_FULL_AND_HELD = {
    Hold.NO_WORKER: "My queue is full and no painter is online right now.",
    Hold.UNREACHABLE: "My queue is full and the painters are briefly out of reach.",
}


def busy(wait_s: float | None, then: str = RESEND_STYLE, hold: Hold | None = None) -> str:
    """A queue that is not moving (``hold``) gets no promised time: nothing can say when it frees up."""
    if hold in _FULL_AND_HELD:
        return f"{_FULL_AND_HELD[hold]} 🙏 Please try again later.\n{then}"
    when = "later" if wait_s is None else f"in about {minutes(max(wait_s, 60.0))}"
    return f"I'm very busy right now. 🙏 Please try again {when}.\n{then}"


def style_name(preset_slug: str | None) -> str:
    if preset_slug is None:
        return "Your own style"
    try:
        return presets.get(preset_slug).short_title
    except presets.PresetError:
        return preset_slug


def result_caption(
    style: str, strength: int, width: int, height: int, seconds: float | None, mention: str | None
) -> str:
    took = f" · {seconds:.0f} s" if seconds is not None else ""
    who = f"{mention}: " if mention else ""
    return f"{who}🖼 {esc(style)} · strength {strength} · {width}×{height}{took}"


PHOTO_DROPPED = "Dropped the photo that was waiting for a style. ✋"
PHOTO_STILL_WAITING = "Your last photo still waits for its style: send one, or /cancel again to drop it."


def _elsewhere(n: int) -> str:
    return f"{_pictures(n)} of yours {'is' if n == 1 else 'are'} in the works in another chat: {ALL_CHATS}"


def photo_dropped(elsewhere: int = 0) -> str:
    """/cancel with only a waiting photo here (and, in a group, maybe pictures in other chats)."""
    return f"{PHOTO_DROPPED}\n{_elsewhere(elsewhere)}" if elsewhere else PHOTO_DROPPED


def cancelled_jobs(n: int, *, elsewhere: int = 0, stopping: int = 0, unreachable: bool = False) -> str:
    """``elsewhere``: the user's pictures in other chats, which a group's /cancel leaves alone.
    ``stopping``: of the ``n``, those whose painter has not confirmed yet; ``unreachable``: because
    the queue is out of reach (then the painter can't hear it until the queue is back)."""
    if n == 0:
        if elsewhere:
            return f"You have nothing in the works here. {_elsewhere(elsewhere)}"
        return "You have nothing in the works to cancel."
    if stopping and unreachable:
        return (
            f"Cancelling {_pictures(n)}: the queue is out of reach for a moment, so the painter stops "
            "once it's back, and nothing is sent. ✋"
        )
    if stopping:
        return f"Cancelling {_pictures(n)}: the painter stops after its current step. ✋"
    return f"Cancelled {_pictures(n)}. ✋"


def queue_empty(*, in_group: bool = False, elsewhere: int = 0, photo_waits: bool = False) -> str:
    """``photo_waits``: a line about the photo waiting for its style follows (not "send a photo")."""
    if elsewhere:
        return f"You have nothing in the works here. {_elsewhere(elsewhere)}"
    if photo_waits:
        return "You have nothing in the works here yet." if in_group else "You have nothing in the works yet."
    if in_group:  # plain photos in a group are ignored: say what does work here
        return "You have nothing in the works here. Reply to a photo with /stylize to paint it."
    return "You have nothing in the works. Send me a photo! 📷"


def queue_line(index: int, style: str, position: int | None, eta_s: float | None, hold: Hold | None = None) -> str:
    if position == 0:
        where = "painting now"
    elif position is None:
        where = "waiting"
    elif position == 1:  # as its status message says
        where = "next in the queue"
    else:
        where = f"#{position} in the queue"
    if hold is Hold.NO_WORKER and position == 0:  # its worker is gone too: nothing is painting it
        where = "stopped with its painter"
    if hold is not None and (position != 0 or hold is not Hold.WARMING_UP):
        return f"{index}. {esc(style)} — {where}; {_HELD_LINE[hold]}"
    return f"{index}. {esc(style)} — {where}, ready in about {minutes(eta_s)}"


def painted_already(style: str | None) -> str:
    """A style asked for again, for a photo this chat already has painted in it with these settings."""
    what = f"in <b>{esc(style)}</b>" if style else "in that style"
    return (
        f"That photo is already painted {what} with these settings: it's above. "
        "Pick another style, or change /strength, /size, /quality or /colors first."
    )


def already_painted(strength: int) -> str:
    """A Stronger/Weaker press whose picture was painted before (the engine would paint it the same)."""
    return f"This photo at strength {strength} is already in this chat: use the buttons under that one."


EDIT_IGNORED = "I only read new messages, not edits: please send it again."
STRONGEST = "That's already the strongest setting."
WEAKEST = "That's already the weakest setting."
NO_CHANGE = "No change."
USE_THE_STRENGTH_BUTTONS = "Use − and + beside it to change the strength."


def wont_do(value: str) -> str:
    """A setting's value that isn't one of its choices, named back so the user sees what was read."""
    shown = value if len(value) <= 20 else value[:19] + "…"
    return f"“{esc(shown)}” won't do."


RESULT_GONE = "Sorry, that result is no longer on the server."


def not_cancellable(status: str) -> str:
    """A Cancel pressed on a picture that had already ended, one way or another."""
    if status == "cancelled":
        return "That picture was already cancelled."
    if status == "failed":
        return "That picture had already stopped."
    return "That picture is already finished."


SENDING_FULL = "Sending the full-size file…"
FULL_NOT_SENT = "Telegram didn't take the full-size file just now: press 📄 Full size again in a moment."
FULL_ALREADY_SENT = "Already on its way: the full-size file is just below."
ANOTHER_STYLE = "Pick another style for this photo:"
#: In a group a picture sent on its own isn't the bot's business: a reply to this message is.
ANOTHER_STYLE_GROUP = (
    "Pick another style for this photo — or reply to this message with a picture to copy the style from."
)

# --- settings ---------------------------------------------------------------------------------


def settings_text(
    strength: int,
    size_name: str,
    size_px: int,
    quality: str,
    colors: bool,
    price_line: str = "",
    owner: str | None = None,
    anonymous: bool = False,
) -> str:
    """``owner``: in a group, whose panel this is (everyone sees it; one person's settings
    follow them into every chat, while those of posts made as a chat stay with that chat)."""
    title = f"<b>{esc(owner)}'s settings</b> (the same in every chat)" if owner else "<b>Your settings</b>"
    if owner and anonymous:
        title = f"<b>Settings for posts as {esc(owner)}</b> (its anonymous admins share them)"
    text = (
        f"{title}\n"
        f"Strength: {strength} (1–10)\n"
        f"Size: {size_name} ({size_px} px long side)\n"
        f"Quality: {quality}\n"
        f"Keep the photo's colours: {'on' if colors else 'off'}"
    )
    return f"{text}\n\n{price_line}" if price_line else text


def price(picture_s: float | None, limit_s: float) -> str:
    """What a picture takes at some settings, so that "large" and "best" show their cost before the wait;
    "" while the device is untimed (a made-up number would mislead more than none)."""
    if picture_s is None:
        return ""
    if picture_s > limit_s:
        return (
            f"⏱ A picture would take about {minutes(picture_s)} at these settings, over the "
            f"{minutes(limit_s)} a picture may take here: pick a smaller size or a faster quality."
        )
    return f"⏱ A picture takes about {minutes(picture_s)} at these settings, queue aside."


def too_slow(picture_s: float, limit_s: float) -> str:
    """Short enough for a button's alert (200 characters)."""
    return (
        f"This picture would take about {minutes(picture_s)} at your settings, over the {minutes(limit_s)} "
        "limit here, so I haven't started it. Pick a smaller size or a faster quality in /settings, then ask again."
    )


STRENGTH_USAGE = "Strength is a number from 1 (subtle) to 10 (bold), e.g. <code>/strength 7</code>."
SIZE_USAGE = "Size is <code>small</code>, <code>medium</code> or <code>large</code>, e.g. <code>/size large</code>."
QUALITY_USAGE = (
    "Quality is <code>fast</code>, <code>balanced</code> or <code>best</code>, e.g. <code>/quality best</code>."
)
COLORS_USAGE = (
    "Use <code>/colors on</code> to keep your photo's colours, <code>/colors off</code> to take the painting's."
)
RESET_DONE = "Settings are back to the defaults."


def setting_saved(what: str, value: object) -> str:
    return f"✅ {what} set to {esc(value)}."


def colors_saved(on: bool) -> str:
    return "✅ I'll keep your photo's colours." if on else "✅ I'll take the painting's colours."


def size_capped(name: str, px: int) -> str:
    return f"✅ Size set to {name} — this machine can do at most {px} px, so that's what you'll get."


# --- inline / admin ---------------------------------------------------------------------------
INLINE_EMPTY_BUTTON = "No pictures yet — open the bot to make one"


def stats_text(
    queue: int,
    running: int,
    done: int,
    failed: int,
    avg_seconds: float | None,
    device: str,
    executor_queue: int,
    hold: Hold | None = None,
    painters: list[str] | None = None,
) -> str:
    """``hold``: what keeps the queue from moving; while the queue is unreachable, its length
    is the last one known, and the stats say so rather than look current.  ``painters``: a
    line per worker, in the scaled set-up."""
    avg = f"{avg_seconds:.1f} s" if avg_seconds is not None else "—"
    stale = ", last known" if hold is Hold.UNREACHABLE else ""
    held = f"⚠️ Held: {hold.value}\n" if hold is not None else ""
    return (
        "<b>Stats</b>\n"
        f"{held}"
        f"Queue: {queue} waiting, {running} running (executor: {executor_queue}{stale})\n"
        f"Today: {done} done, {failed} failed\n"
        f"Average job time today: {avg}\n"
        f"Device: {esc(device)}"
    ) + "".join(f"\n• {esc(line)}" for line in painters or [])
