"""Webhook notifications (Slack-compatible `{"text": ...}` JSON) on start, end, crash and new best.

Posts run in one background thread with a 5 s timeout: a webhook that fails or hangs never stops or slows
training; a failed post is warned about on stderr. The URL is a secret: `${ENV_VAR}` is read from the
environment here and never stored resolved (utils.config.to_dict redacts a literal URL in every saved copy).
"""
from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time
import urllib.request

from trainer.callbacks import Callback
from utils.config import REDACTED, NotifyConfig
from utils.errors import ConfigError

TIMEOUT_S = 5.0
# the payload's `event` is the name in logging.notify.events; the message text says it in words
EVENT_WORDS = {"start": "started", "end": "finished", "crash": "crashed", "best": "new best"}


def resolve_webhook(webhook: str) -> str | None:
    """The URL: `${NAME}` from the environment; None (with a warning) for a URL redacted in a saved config."""
    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", webhook)
    if match:
        value = os.environ.get(match.group(1))
        if not value:
            raise ConfigError(f"logging.notify.webhook: environment variable {match.group(1)} is not set")
        return value
    if webhook == REDACTED:
        print("warning: logging.notify.webhook was redacted in the saved config; no notifications "
              "(give it again with --set logging.notify.webhook='${ENV_VAR}')", file=sys.stderr)
        return None
    if not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"logging.notify.webhook: expected an http(s) URL or ${{ENV_VAR}}, got {webhook[:40]!r}")
    return webhook


class Notifier(Callback):
    name = "notify"

    def __init__(self, cfg: NotifyConfig, url: str, config_name: str):
        self.events, self.url, self.config_name = set(cfg.events), url, config_name
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._post_loop, name="notify", daemon=True)

    def on_start(self, trainer) -> None:
        self.started = time.time()
        self.thread.start()
        if "start" in self.events:
            self._send(trainer, "start", epoch=trainer.start_epoch)

    def on_best(self, trainer, record: dict) -> None:
        if "best" in self.events:
            self._send(trainer, "best", epoch=record["epoch"])

    def on_end(self, trainer, result: dict) -> None:
        if "end" in self.events:
            self._send(trainer, "end", epoch=result["epochs"])
        self._finish()

    def on_crash(self, trainer, error: BaseException) -> None:
        if "crash" in self.events:
            lines = str(error).strip().splitlines() or [""]
            self._send(trainer, "crash", error=f"{type(error).__name__}: {lines[-1]}")
        self._finish()

    def _send(self, trainer, event: str, epoch: int | None = None, error: str | None = None) -> None:
        best = trainer.best_score if trainer.best_score >= 0 else None
        fields = {"run": trainer.run_dir.name, "config": self.config_name, "event": event, "epoch": epoch,
                  f"best_{trainer.mode.metric}": None if best is None else round(best, 4),
                  "wall_time_s": round(time.time() - self.started, 1), "error": error}
        text = f"*{trainer.run_dir.name}* ({self.config_name}) {EVENT_WORDS[event]}"
        if epoch is not None:
            text += f" at epoch {epoch}/{trainer.cfg.trainer.epochs}"
        if best is not None:
            text += f", best {trainer.mode.metric_title} {best:.4f}"
        text += f", {fields['wall_time_s']:.0f} s"
        if error:
            text += f"\n{error}"
        self.queue.put({"text": text, **{k: v for k, v in fields.items() if v is not None}})

    def _post_loop(self) -> None:
        while True:
            message = self.queue.get()
            if message is None:
                return
            try:
                request = urllib.request.Request(self.url, data=json.dumps(message).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    response.read()
            except Exception as e:  # any network failure: the run goes on, the user is told once per message
                print(f"warning: notification not sent ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)

    def _finish(self) -> None:
        """Let queued messages go out (at most one timeout each) so the end message is not lost at exit."""
        self.queue.put(None)
        self.thread.join(timeout=TIMEOUT_S * 2)
