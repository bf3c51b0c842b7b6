"""The app's session lifecycle: start a session (from a spec or a backend), run its backend in one
worker on Textual's loop, switch to another relay (`/connect`), go back to the connect screen,
remember what connected in the config, and end it politely (Ctrl+Q, /quit, SIGHUP, SIGTERM).

`Sessions` is a part of `ChatApp` (a mixin): it uses the app's model (`chat`), `backend`,
`_emit` and `refresh_ui`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import signal
import socket

from textual import work
from textual.message import Message

from udproom.protocol import events as ev

from . import config as config_mod
from . import model as m
from .screens import ConfirmQuit, ConnectScreen
from .session import Spec, SpecError


class NetReady(Message):
    pass


class NetFailed(Message):
    def __init__(self, spec: Spec | None, reason: str) -> None:
        super().__init__()
        self.spec = spec
        self.reason = reason


def describe_error(e: BaseException, spec: Spec | None = None) -> str:
    if isinstance(e, OSError):
        where = spec.address if spec and spec.address else "that address"
        if e.errno == errno.EADDRINUSE:
            return f"cannot listen on {where}: the port is already in use"
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
        if e.errno == errno.EADDRNOTAVAIL:
            return f"cannot use {where}: no interface of this machine has that address"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve {where}: {e.strerror or e}"
        return f"network error: {e.strerror or e}"
    if isinstance(e, ImportError):
        return f"networking is not available: {e}"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text


class Sessions:
    """Starting, switching and ending sessions (part of ChatApp)."""

    def _catch_hangup(self) -> None:
        """The terminal closed (SIGHUP) or a polite kill (SIGTERM): say goodbye like Ctrl+Q
        instead of letting the others see us time out."""
        self._signals: list[int] = []
        try:
            loop = asyncio.get_running_loop()
            for sig, handler in ((signal.SIGHUP, self._hangup), (signal.SIGTERM, self.polite_quit)):
                loop.add_signal_handler(sig, handler)
                self._signals.append(sig)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            pass  # no such signals (Windows) or not the main thread

    def _hangup(self) -> None:
        """The terminal is gone: say goodbye on the network, then end the process without
        touching the screen (Textual's shutdown writes to the dead terminal and blocks forever)."""
        self.run_worker(self._leave_then_exit(), group="quit")

    async def _leave_then_exit(self) -> None:
        await self._say_goodbye(1.0)
        self._exit_process()

    def _exit_process(self) -> None:
        os._exit(0)

    def on_unmount(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for sig in getattr(self, "_signals", []):
                loop.remove_signal_handler(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        self.history.close()

    # ------------------------------------------------------------------ sessions

    def show_connect(self, error: str = "", spec: Spec | None = None) -> None:
        self.push_screen(ConnectScreen(self.config, error, spec), self._connect_chosen)

    def _connect_chosen(self, spec: Spec | None) -> None:
        if spec is None:
            return
        self.start(spec=spec)
        self._from_connect = self.chat.esc_back = True

    def _remember_connected(self) -> None:
        """Save the address to "recent" only once it has connected. The nick, mode and rooms are
        remembered only when chosen on the connect screen (a run with `--nick throwaway` does not
        overwrite them); after that the nick follows the one in use (a refused one is replaced
        by the one the relay accepts)."""
        spec, self._remember = self._remember, None
        if spec is None or not self.save_config:
            return
        if self._from_connect:
            self.config.remember(spec.mode, spec.address, spec.nick, spec.rooms)
            self._keep_nick = True
        else:
            self.config.remember(self.config.mode, spec.address, self.config.nick, self.config.rooms)
        self._save_config()

    def _save_config(self) -> None:
        err = config_mod.save(self.config)
        if err:
            self.chat.add_local(None, m.ERROR, err)

    def action_back(self) -> None:
        """Esc: back to the connect screen while a session chosen there has never connected."""
        if not (self._from_connect and not self.chat.connected_once and self.spec is not None):
            return
        spec = self.spec
        self._stop()
        self.chat.set_state(m.Conn.DISCONNECTED)
        self.show_connect(f"no answer from {spec.address}" if spec.mode == "join" else "", spec)
        self.refresh_ui()

    def _stop(self) -> None:
        self._close_backend()
        self.backend = None
        self.workers.cancel_group(self, "net")

    def _close_backend(self) -> None:
        """Close the session's backend, if any: it leaves its rooms and says Bye (its worker ends)."""
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass

    def start(self, spec: Spec | None = None, backend=None, running=None, held=()) -> None:
        """Drop the current session (if any) and run a new one. `running`: the task of a backend
        already started (by /connect, which waited for it to answer); `held`: its events so far."""
        self._close_backend()
        self.backend = None
        self._from_connect = self._keep_nick = False
        self._remember = spec
        if spec is not None:
            self.chat.reset_session(spec.nick, spec.address, spec.rooms)
        else:
            self.chat.reset_session(backend.nick if backend is not None else self.chat.nick)
        self._inbox.clear()
        self.spec = spec
        rooms = list(spec.rooms) if spec is not None else list(getattr(backend, "rooms", []))
        self.history.begin(spec, backend, rooms)  # each room's previous lines, before any network
        self._log_notice()
        self._network(spec, backend, running)
        for event in held:
            self._emit(event)
        self.refresh_ui(full=True)

    @work(exclusive=True, group="net", exit_on_error=False)
    async def _network(self, spec: Spec | None, backend, running=None) -> None:
        server = None
        try:
            if backend is None:
                from . import session

                try:
                    backend, server, share = await session.build(
                        self._with_identity(spec), timing=self.timing
                    )
                except (OSError, SpecError, ImportError, ValueError) as e:
                    self.post_message(NetFailed(spec, describe_error(e, spec)))
                    return
                self.chat.share = share
                self._server = server
            self.backend = backend
            self.history.serve(backend)  # direct mode: its peer answers history from the log
            self.chat.mode = backend.mode
            # direct mode: message seq numbers are Lamport stamps; the view orders by them
            self.chat.stamp_order = str(backend.mode).startswith("direct")
            self.post_message(NetReady())
            await (running if running is not None else backend.run(self._emit))
        except asyncio.CancelledError:
            if backend is not None:
                backend.close()
            if running is not None:
                running.cancel()
            raise
        except Exception as e:
            self.post_message(NetFailed(None, describe_error(e, spec)))
        finally:
            if server is not None:
                if self._server is server:
                    self._server = None
                try:
                    await server.stop()
                except Exception:
                    pass

    def on_net_ready(self, message: NetReady) -> None:
        self.refresh_ui(full=True)

    def on_net_failed(self, message: NetFailed) -> None:
        self.chat.set_state(m.Conn.FAILED, message.reason)
        if message.spec is not None and self.screen is self.screen_stack[0]:
            # could not even start (bad address, port in use): back to the connect screen
            self.show_connect(message.reason, message.spec)
        else:
            self.chat.add_local(None, m.ERROR, message.reason)
        self.refresh_ui()

    def ask_quit(self) -> None:
        """/quit and the palette: like Ctrl+Q (hosting with others connected, ask first)."""
        self.run_worker(self.action_quit(), group="quit")

    def polite_quit(self) -> None:
        """Leave every room (the backend says Bye), then exit, without asking: SIGTERM, and the
        answer to "quit while hosting?"."""
        self.run_worker(self._quit_now(), group="quit")

    def hosted_others(self) -> list[str]:
        """Hosting: the nicks of the sessions our relay would cut off (everyone but us)."""
        server = self._server
        relay = getattr(server, "relay", None)
        if relay is None:
            return []
        me = self.backend.nick if self.backend is not None else self.chat.nick
        nicks = sorted((str(s.nick) for s in list(relay.sessions.values())), key=str.casefold)
        if me in nicks:
            nicks.remove(me)
        return nicks

    def _with_identity(self, spec: Spec) -> Spec:
        """`spec` with this run's --identity, if it names none itself."""
        if spec.identity or not self.identity:
            return spec
        return dataclasses.replace(spec, identity=self.identity)

    async def _connect_to(self, spec: Spec) -> None:
        """Resolve the new address first (a typo keeps the current session), then start the new
        session beside the current one and switch only once the new relay answers."""
        from . import session

        still = "still on the current connection" + (f" ({self.chat.address})" if self.chat.address else "")
        try:
            await session.resolvable(spec.address)
        except SpecError as e:
            self.error(f"{e}; {still}")
            if not self.input.value:  # the line stays to fix the typo
                self.input.value = f"/connect {spec.address}"
                self.input.cursor_position = len(self.input.value)
            return
        if self.backend is None:
            self.start(spec=spec)
            return
        self.info(f"trying {spec.address}… ({still} until it answers)")
        try:
            backend, _server, _share = await session.build(self._with_identity(spec), timing=self.timing)
        except (OSError, SpecError, ImportError, ValueError) as e:
            self.error(f"{describe_error(e, spec)}; {still}")
            return
        held: list = []
        adopted = False
        answer = asyncio.get_running_loop().create_future()

        def emit(event) -> None:
            if adopted:
                self._emit(event)
                return
            held.append(event)
            if not answer.done() and isinstance(event, (ev.Connected, ev.ConnectionLost, ev.Refused)):
                answer.set_result(event)

        task = asyncio.ensure_future(backend.run(emit))
        task.add_done_callback(lambda _t: answer.done() or answer.set_result(None))
        try:
            first = await answer
        except asyncio.CancelledError:
            backend.close()
            task.cancel()
            raise
        if not isinstance(first, ev.Connected):
            backend.close()
            try:
                await asyncio.wait_for(task, 1.0)
            except Exception:
                pass
            if isinstance(first, ev.Refused):
                why = f"the relay at {spec.address} refused: {first.reason}"
            else:
                why = f"no answer from a relay at {spec.address}"
            self.error(f"{why}; {still}")
            return
        active = self.chat.active
        adopted = True
        self.start(spec=spec, backend=backend, running=task, held=held)
        if active in spec.rooms:
            self.chat.auto_switch = {active}  # come back to the room that was on screen

    async def action_quit(self) -> None:
        """Ctrl+Q: leave every room cleanly (the backend says goodbye), then exit. Hosting with
        others connected, ask first: quitting stops the relay for them."""
        if isinstance(self.screen, ConfirmQuit):
            self.screen.dismiss(True)  # Ctrl+Q again
            return
        others = self.hosted_others()
        if others:
            self.push_screen(ConfirmQuit(others), lambda yes: self.polite_quit() if yes else None)
            return
        await self._quit_now()

    async def _quit_now(self) -> None:
        await self._say_goodbye(2.0)
        self.history.close()
        self.exit(0)

    async def _say_goodbye(self, patience: float) -> None:
        """Close the backend (it leaves its rooms and says Bye) and give the network worker up
        to `patience` seconds to send that."""
        if self.backend is None:
            return
        self._close_backend()
        for w in [w for w in self.workers if w.group == "net" and w.is_running]:
            try:
                await asyncio.wait_for(w.wait(), patience)
            except Exception:
                pass
