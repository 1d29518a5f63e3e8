"""A fake Telegram Bot API server for tests: real HTTP, JSON and multipart, file downloads.

Telegram's servers are unreachable from CI, so the tests point the real
python-telegram-bot ``Application`` at this server through ``base_url`` /
``base_file_url``.  It answers the methods the bot uses with objects shaped like
the real API's, records every call, and lets tests act as users: send texts,
photos, documents, albums, press buttons, type inline queries, block the bot or
trigger flood control.  It runs on the test's own event loop (tornado, which
python-telegram-bot's webhook extra already brings).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.web

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
# Parameters Telegram expects JSON-encoded inside form and multipart bodies.
_JSON_PARAMS = {
    "reply_markup",
    "reply_parameters",
    "media",
    "results",
    "commands",
    "entities",
    "caption_entities",
    "allowed_updates",
    "link_preview_options",
    "button",
}


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Request:
    """One Bot API call the bot made."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = 0.0
    status: int = 200
    #: The name each uploaded file was sent under (what a user sees on a document).
    filenames: dict[str, str] = field(default_factory=dict)


@dataclass
class Hold:
    """A call whose effect happens at once but whose answer waits for ``release()``.

    Real Telegram shows a message (and its buttons) to the user before the bot
    has the answer to its ``sendMessage``; a hold opens that window wide.
    """

    method: str
    text: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    result: Any = None

    def release(self) -> None:
        self.released.set()


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return 90, 90


class FakeTelegram:
    """The server and the test-side API (see the module docstring)."""

    def __init__(
        self, token: str = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi", *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """``host`` and ``port`` choose where it listens (a bot in a container needs more than loopback)."""
        self.token = token
        self.host, self.port = host, port
        self.bot_user = {
            "id": 999,
            "is_bot": True,
            "first_name": "Painter",
            "username": "PainterBot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
        }
        self.requests: list[Request] = []
        self.commands: list[dict] = []
        self.base_url = self.base_file_url = ""
        self._updates: list[dict] = []
        self._new_update = asyncio.Event()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._file_ids = itertools.count(1)
        self._files: dict[str, bytes] = {}
        self._file_sizes: dict[str, int] = {}
        self._chats: dict[int, dict] = {}
        self._bot_messages: dict[int, dict[int, dict]] = {}
        self._blocked: set[int] = set()
        self._admins: set[tuple[int, int]] = set()  # (chat id, user id)
        self._migrated: dict[int, int] = {}  # basic group id -> its supergroup's
        self._floods: dict[str, list[int]] = {}
        self._failures: list[list[Any]] = []  # [method, chat_id or None, times left, ApiError]
        self._holds: list[Hold] = []
        self._server: tornado.httpserver.HTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        fake = self

        class Api(tornado.web.RequestHandler):
            async def post(self, token: str, method: str) -> None:
                code, body = await fake._handle(token, method, self.request)
                self.set_status(code)
                self.set_header("Content-Type", "application/json")
                self.write(json.dumps(body))

            get = post

        class Files(tornado.web.RequestHandler):
            def get(self, token: str, path: str) -> None:
                if token != fake.token or path not in fake._files:
                    self.set_status(404)
                    return
                self.write(fake._files[path])

        app = tornado.web.Application([(r"/bot([^/]+)/(\w+)", Api), (r"/file/bot([^/]+)/(.+)", Files)])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=100 << 20)
        self._server.add_sockets([sock])
        self.base_url = f"http://127.0.0.1:{port}/bot"
        self.base_file_url = f"http://127.0.0.1:{port}/file/bot"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.close_all_connections(), 2)
        self._new_update.set()  # release a long poll in flight
        for held in self._holds:
            held.release()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- people, chats and files -------------------------------------------

    def user(self, user_id: int, first_name: str = "Alice", username: str | None = None) -> dict:
        user = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def anonymous_admin(self, group: dict) -> dict:
        """A group admin posting anonymously: Telegram sends every such message from one shared
        bot account, with the group itself as ``sender_chat`` (use it as any other user)."""
        return {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot", "as": group}

    def make_admin(self, group: dict, user: dict) -> None:
        """``user`` administers ``group`` (getChatMember says so; everyone else is a member)."""
        self._admins.add((group["id"], user["id"]))

    def private_chat(self, user: dict) -> dict:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self._chats[chat["id"]] = chat
        return chat

    def group_chat(self, chat_id: int = -100123, title: str = "Painters", kind: str = "supergroup") -> dict:
        chat = {"id": chat_id, "type": kind, "title": title}
        self._chats[chat_id] = chat
        return chat

    def upgrade_group(self, group: dict, user: dict, new_id: int, *, announce: bool = True) -> dict:
        """``user`` turns a basic group into a supergroup, as Telegram does: a new chat id, a
        service message in each chat naming the other, and every later call to the old id refused.

        ``announce=False``: the bot never sees the service messages (they were older than the
        24 hours Telegram keeps updates), so only the refusals tell it.
        """
        supergroup = self.group_chat(new_id, group["title"])
        self._migrated[group["id"]] = new_id
        if announce:
            self._push({"message": self._user_message(group, user, migrate_to_chat_id=new_id)})
            self._push({"message": self._user_message(supergroup, user, migrate_from_chat_id=group["id"])})
        return supergroup

    def add_file(self, data: bytes, *, file_size: int | None = None) -> tuple[str, str]:
        """Store bytes as Telegram would; ``file_size`` fakes a big file without the bytes."""
        n = next(self._file_ids)
        file_id = f"F{n}"
        self._files[file_id] = data
        self._file_sizes[file_id] = file_size if file_size is not None else len(data)
        return file_id, f"U{n}"

    # -- acting as users -----------------------------------------------------

    def _push(self, update: dict) -> dict:
        update["update_id"] = next(self._update_ids)
        self._updates.append(update)
        self._new_update.set()
        return update

    def _user_message(self, chat: dict, user: dict, reply_to: dict | None = None, **fields: Any) -> dict:
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {k: v for k, v in user.items() if k != "as"},
            **fields,
        }
        if "as" in user:
            message["sender_chat"] = user["as"]
        if reply_to:
            message["reply_to_message"] = reply_to.get("message", reply_to)
        return message

    @staticmethod
    def _command_entities(text: str | None) -> list[dict]:
        if text and text.startswith("/"):
            return [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return []

    def bot_membership(self, chat: dict, user: dict, old: str = "left", new: str = "member") -> dict:
        """``user`` adds the bot to ``chat`` (or, with other statuses, removes it): a my_chat_member update."""
        change = {
            "chat": chat,
            "from": user,
            "date": int(time.time()),
            "old_chat_member": self._member(old),
            "new_chat_member": self._member(new),
        }
        return self._push({"my_chat_member": change})

    def _member(self, status: str) -> dict:
        member: dict[str, Any] = {"status": status, "user": self.bot_user}
        if status == "administrator":  # the Bot API sends every right, granted or not
            rights = ("manage_chat", "delete_messages", "manage_video_chats", "restrict_members", "promote_members")
            rights += ("change_info", "invite_users", "post_stories", "edit_stories", "delete_stories", "be_edited")
            member.update({f"can_{right}": False for right in rights}, is_anonymous=False)
        return member

    def send_text(self, chat: dict, user: dict, text: str, *, reply_to: dict | None = None) -> dict:
        fields: dict[str, Any] = {"text": text}
        if entities := self._command_entities(text):
            fields["entities"] = entities
        return self._push({"message": self._user_message(chat, user, reply_to, **fields)})

    def send_photo(
        self,
        chat: dict,
        user: dict,
        data: bytes,
        *,
        caption: str | None = None,
        reply_to: dict | None = None,
        media_group_id: str | None = None,
    ) -> dict:
        file_id, unique_id = self.add_file(data)
        w, h = _image_size(data)
        thumb_id, thumb_unique = self.add_file(data)
        scale = 90 / max(w, h)
        fields: dict[str, Any] = {
            "photo": [
                {
                    "file_id": thumb_id,
                    "file_unique_id": thumb_unique,
                    "width": max(1, round(w * scale)),
                    "height": max(1, round(h * scale)),
                    "file_size": len(data),
                },
                {"file_id": file_id, "file_unique_id": unique_id, "width": w, "height": h, "file_size": len(data)},
            ]
        }
        if caption:
            fields["caption"] = caption
            if entities := self._command_entities(caption):
                fields["caption_entities"] = entities
        if media_group_id:
            fields["media_group_id"] = media_group_id
        return self._push({"message": self._user_message(chat, user, reply_to, **fields)})

    def send_document(
        self,
        chat: dict,
        user: dict,
        data: bytes | None,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        file_size: int | None = None,
    ) -> dict:
        file_id, unique_id = self.add_file(data or b"", file_size=file_size)
        fields: dict[str, Any] = {
            "document": {
                "file_id": file_id,
                "file_unique_id": unique_id,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": self._file_sizes[file_id],
            }
        }
        if caption:
            fields["caption"] = caption
            if entities := self._command_entities(caption):
                fields["caption_entities"] = entities
        return self._push({"message": self._user_message(chat, user, None, **fields)})

    def send_sticker(self, chat: dict, user: dict) -> dict:
        file_id, unique_id = self.add_file(b"RIFF....WEBP")
        sticker = {
            "file_id": file_id,
            "file_unique_id": unique_id,
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
        }
        return self._push({"message": self._user_message(chat, user, None, sticker=sticker)})

    def send_animation(self, chat: dict, user: dict) -> dict:
        """A GIF as Telegram delivers it: an MP4 ``animation``, repeated as ``document`` for old clients."""
        file_id, unique_id = self.add_file(b"\x00\x00\x00\x18ftypmp42")
        common = {"file_id": file_id, "file_unique_id": unique_id, "file_name": "cat.gif.mp4", "mime_type": "video/mp4"}
        animation = {**common, "width": 320, "height": 240, "duration": 3}
        return self._push({"message": self._user_message(chat, user, None, animation=animation, document=common)})

    def edit_message(self, update: dict, **changes: Any) -> dict:
        """The user edits a message they sent (``text=`` or ``caption=``): an edited_message update."""
        message = {**update["message"], **changes, "edit_date": int(time.time())}
        return self._push({"edited_message": message})

    def send_voice(self, chat: dict, user: dict) -> dict:
        file_id, unique_id = self.add_file(b"OggS....")
        voice = {"file_id": file_id, "file_unique_id": unique_id, "duration": 2, "mime_type": "audio/ogg"}
        return self._push({"message": self._user_message(chat, user, None, voice=voice)})

    def press_button(self, message: dict, user: dict, data: str) -> dict:
        """A callback query on a message the bot sent (pass the message as returned by the bot)."""
        return self._push(
            {
                "callback_query": {
                    "id": str(next(self._update_ids)),
                    "from": user,
                    "message": message,
                    "chat_instance": "instance-1",
                    "data": data,
                }
            }
        )

    def inline_query(self, user: dict, query: str = "") -> dict:
        return self._push(
            {"inline_query": {"id": str(next(self._update_ids)), "from": user, "query": query, "offset": ""}}
        )

    def block_bot(self, user_id: int) -> None:
        self._blocked.add(user_id)

    def flood(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        self._floods[method] = [retry_after, times]

    def fail(
        self,
        method: str,
        code: int,
        description: str,
        *,
        chat_id: int | None = None,
        times: int = 1,
        parameters: dict | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` (to ``chat_id``, if given) answer with this error."""
        self._failures.append([method, chat_id, times, ApiError(code, description, parameters)])

    def hold(self, method: str, text: str = "") -> Hold:
        """Hold the answer to the next ``method`` call whose text contains ``text`` (see ``Hold``)."""
        held = Hold(method, text)
        self._holds.append(held)
        return held

    # -- what the bot did ----------------------------------------------------

    def calls(self, method: str | None = None, chat_id: int | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (chat_id is None or str(r.params.get("chat_id")) == str(chat_id))
        ]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Request], bool] = lambda r: True,
        *,
        timeout: float = 30.0,
        count: int = 1,
    ) -> list[Request]:
        """Successful calls of ``method`` matching ``predicate``, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.calls(method) if r.status == 200 and predicate(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = ", ".join(f"{r.method}({r.status})" for r in self.requests[-15:])
                raise AssertionError(
                    f"waited {timeout}s for {count} {method} call(s), got {len(found)}; last calls: {seen}"
                )
            await asyncio.sleep(0.01)

    def messages(self, chat_id: int) -> list[dict]:
        """The bot's messages in a chat as they are now (after edits and deletes)."""
        return list(self._bot_messages.get(int(chat_id), {}).values())

    # -- the server side -----------------------------------------------------

    @staticmethod
    def _parse(request: tornado.httputil.HTTPServerRequest) -> tuple[dict[str, Any], dict[str, bytes]]:
        if request.headers.get("Content-Type", "").startswith("application/json"):
            params = json.loads(request.body or b"{}")
        else:
            params = {k: v[0].decode() for k, v in request.body_arguments.items()}
            params.update({k: v[0].decode() for k, v in request.query_arguments.items()})
            for key, value in list(params.items()):
                if key in _JSON_PARAMS and isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        params[key] = json.loads(value)
        files = {k: v[0]["body"] for k, v in request.files.items()}
        return params, files

    @staticmethod
    def _filenames(request: tornado.httputil.HTTPServerRequest) -> dict[str, str]:
        return {k: v[0]["filename"] for k, v in request.files.items()}

    async def _handle(self, token: str, method: str, request: tornado.httputil.HTTPServerRequest) -> tuple[int, dict]:
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        params, files = self._parse(request)
        record = Request(method, params, files, time.monotonic(), filenames=self._filenames(request))
        try:
            result = await self._call(method, params, files)
            held = next(
                (
                    h
                    for h in self._holds
                    if not h.reached.is_set() and h.method == method and h.text in str(params.get("text", ""))
                ),
                None,
            )
            if held is not None:
                held.result = result
                held.reached.set()
                await held.released.wait()
        except ApiError as exc:
            record.status = exc.code
            body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            return exc.code, body
        finally:
            # Recorded once answered, so a test that sees a call also sees its outcome.
            if method != "getUpdates":
                self.requests.append(record)
        return 200, {"ok": True, "result": result}

    def _bot_message(self, chat_id: int, params: dict, **fields: Any) -> dict:
        chat = self._chats.get(chat_id, {"id": chat_id, "type": "private" if chat_id > 0 else "group"})
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.bot_user,
            **fields,
        }
        if isinstance(params.get("reply_markup"), dict):
            message["reply_markup"] = params["reply_markup"]
        reply = params.get("reply_parameters") or (
            {"message_id": params["reply_to_message_id"]} if params.get("reply_to_message_id") else None
        )
        if isinstance(reply, dict) and reply.get("message_id"):
            message["reply_to_message"] = {
                "message_id": int(reply["message_id"]),
                "date": int(time.time()),
                "chat": chat,
            }
        self._bot_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return message

    def _upload(self, params: dict, files: dict[str, bytes], name: str) -> tuple[str, bytes]:
        value = params.get(name)
        if name in files:
            data = files[name]
        elif isinstance(value, str) and value.startswith("attach://"):
            data = files[value[len("attach://") :]]
        elif isinstance(value, str) and value in self._files:
            return value, self._files[value]
        else:
            raise ApiError(400, f"Bad Request: there is no {name} in the request")
        file_id, _ = self.add_file(data)
        return file_id, data

    def _photo_sizes(self, file_id: str, data: bytes) -> list[dict]:
        w, h = _image_size(data)
        return [{"file_id": file_id, "file_unique_id": "u" + file_id, "width": w, "height": h, "file_size": len(data)}]

    def _edit_target(self, params: dict) -> dict:
        message = self._bot_messages.get(int(params["chat_id"]), {}).get(int(params["message_id"]))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message

    async def _call(self, method: str, params: dict, files: dict[str, bytes]) -> Any:
        flood = self._floods.get(method)
        if flood and flood[1] > 0:
            flood[1] -= 1
            raise ApiError(429, f"Too Many Requests: retry after {flood[0]}", {"retry_after": flood[0]})
        chat_id = int(params["chat_id"]) if params.get("chat_id") not in (None, "") else None
        for failure in self._failures:
            if failure[0] == method and failure[1] in (None, chat_id) and failure[2] > 0:
                failure[2] -= 1
                raise failure[3]
        if chat_id is not None and chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self._migrated:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )

        if method == "getMe":
            return self.bot_user
        if method == "getUpdates":
            return await self._get_updates(params)
        if method in (
            "deleteWebhook",
            "setWebhook",
            "close",
            "logOut",
            "sendChatAction",
            "answerCallbackQuery",
            "answerInlineQuery",
            "setMessageReaction",
            "setMyDescription",
            "setMyShortDescription",
        ):
            return True
        if method == "setMyCommands":
            self.commands = params.get("commands") or []
            return True
        if method == "getMyCommands":
            return self.commands
        if method == "getChatMember":
            user_id = int(params["user_id"])
            status = "administrator" if (chat_id, user_id) in self._admins else "member"
            return {**self._member(status), "user": {"id": user_id, "is_bot": False, "first_name": "Someone"}}
        if chat_id is None and method.startswith(("send", "edit", "delete")):
            raise ApiError(400, "Bad Request: chat_id is empty")
        if method == "sendMessage":
            return self._bot_message(chat_id, params, text=params["text"])
        if method == "sendPhoto":
            file_id, data = self._upload(params, files, "photo")
            w, h = _image_size(data)
            # The Bot API's limits on a photo (sendPhoto): 10 MB, width + height <= 10000, ratio <= 20.
            if len(data) > 10 * 2**20 or w + h > 10000 or max(w, h) > 20 * min(w, h):
                raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
            fields: dict[str, Any] = {"photo": self._photo_sizes(file_id, data)}
            if params.get("caption"):
                fields["caption"] = params["caption"]
            return self._bot_message(chat_id, params, **fields)
        if method == "sendDocument":
            file_id, data = self._upload(params, files, "document")
            fields = {
                "document": {
                    "file_id": file_id,
                    "file_unique_id": "u" + file_id,
                    "file_size": len(data),
                    "file_name": params.get("file_name") or "file",
                }
            }
            if params.get("caption"):
                fields["caption"] = params["caption"]
            return self._bot_message(chat_id, params, **fields)
        if method == "sendMediaGroup":
            sent = []
            for item in params["media"]:
                file_id, data = self._upload({"media": item["media"]}, files, "media")
                sent.append(
                    self._bot_message(
                        chat_id, params, photo=self._photo_sizes(file_id, data), caption=item.get("caption", "")
                    )
                )
            return sent
        if method in ("editMessageText", "editMessageCaption", "editMessageReplyMarkup"):
            message = self._edit_target(params)
            key = {"editMessageText": "text", "editMessageCaption": "caption"}.get(method)
            new_markup = params.get("reply_markup") if isinstance(params.get("reply_markup"), dict) else None
            if (key is None or message.get(key) == params.get(key)) and message.get("reply_markup") == new_markup:
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup",
                )
            if key is not None:
                message[key] = params.get(key)
            if new_markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = new_markup
            message["edit_date"] = int(time.time())
            return message
        if method == "deleteMessage":
            self._bot_messages.get(chat_id, {}).pop(int(params["message_id"]), None)
            return True
        if method == "getFile":
            file_id = params["file_id"]
            if file_id not in self._files:
                raise ApiError(400, "Bad Request: invalid file_id")
            if self._file_sizes[file_id] > TELEGRAM_DOWNLOAD_LIMIT:
                raise ApiError(400, "Bad Request: file is too big")
            return {
                "file_id": file_id,
                "file_unique_id": "u" + file_id,
                "file_size": self._file_sizes[file_id],
                "file_path": file_id,
            }
        return True

    async def _get_updates(self, params: dict) -> list[dict]:
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), float(params.get("timeout") or 0) or 0.01)
        return [u for u in self._updates if u["update_id"] >= offset]
