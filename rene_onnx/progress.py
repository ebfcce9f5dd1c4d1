"""Progress of long work: one event type, delivered to listeners and to ``logging``.

Library code never prints. A long stage calls :func:`emit` as it goes::

    from rene_onnx.progress import emit

    for epoch in range(epochs):
        emit("finetune", step=epoch + 1, total=epochs, message="epoch", loss=round(loss, 4))

Each event goes to the logger ``rene_onnx.<stage>`` (DEBUG for steps, INFO for events without a
step) and to every listener registered with :func:`listen` in the current context. The CLI listens
and draws rich progress bars (nothing on a pipe); a Python caller can listen too, or just configure
``logging``.
"""
from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a stage (``step`` of ``total``), or a stage-level message when ``step`` is None."""

    stage: str  # load | search | factorize | finetune | rewrite | validate | latency | export | ...
    step: int | None = None
    total: int | None = None
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """A short human line: ``search 3/60 stage=2 ...``."""
        parts = [self.stage]
        if self.step is not None:
            parts.append(f"{self.step}/{self.total}" if self.total else str(self.step))
        if self.message:
            parts.append(self.message)
        parts += [f"{k}={v}" for k, v in self.info.items()]
        return " ".join(parts)


Listener = Callable[[ProgressEvent], None]
_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar("rene_onnx_progress", default=())


def emit(stage: str, step: int | None = None, total: int | None = None, message: str = "", **info: Any) -> None:
    """Report progress of ``stage`` to ``logging`` and to the listeners of the current context."""
    event = ProgressEvent(stage, step, total, message, info)
    logger = logging.getLogger(f"rene_onnx.{stage}")
    level = logging.DEBUG if step is not None else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(level, event.describe())
    for listener in _listeners.get():
        listener(event)


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Deliver every event emitted inside the ``with`` block (this thread / context) to ``listener``."""
    token = _listeners.set(_listeners.get() + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)
