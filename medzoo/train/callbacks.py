"""Built-in Trainer callbacks (beyond TensorBoard, see :mod:`medzoo.train.tb`): a tqdm progress bar.

A callback is any ``fn(trainer)`` registered with ``Trainer.add_callback(event, fn)``; events are
``on_train_start``, ``on_step_end``, ``on_eval_end`` and ``on_train_end``.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["ProgressCallback"]


class ProgressCallback:
    """A tqdm bar over optimizer steps with ETA and the running loss; disabled when quiet or not on a TTY."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar: Any = None

    def on_train_start(self, trainer: Any) -> None:
        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc="train", unit="step",
                        disable=self.disable, dynamic_ncols=True)

    def on_step_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{trainer.last_loss:.4f}", epoch=trainer.epoch, refresh=False)

    def on_train_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
