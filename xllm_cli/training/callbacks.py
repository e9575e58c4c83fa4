"""What the user sees while training (progress with loss, learning rate and tokens/s), and the checkpoint on Ctrl-C or
SIGTERM. Only the main process prints."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

from transformers import TrainerCallback

from xllm_cli import console
from xllm_cli.console import progress
from xllm_cli.training.distributed import world_size


class ProgressCallback(TrainerCallback):
    """Training progress through the shared ``xllm_cli.console.progress`` display (a rich bar on a terminal, a plain line per
    tenth otherwise), showing the latest loss, learning rate and non-padding tokens per second."""

    def __init__(self) -> None:
        self.display = contextlib.ExitStack()
        self.advance: Any = None
        self.started = 0.0
        self.first_tokens = 0
        self.shown: dict[str, Any] = {}

    def tokens_per_second(self, state: Any) -> float:
        elapsed = time.perf_counter() - self.started
        return (state.num_input_tokens_seen - self.first_tokens) / elapsed if elapsed > 0 else 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:

        self.started = time.perf_counter()
        self.first_tokens = state.num_input_tokens_seen
        warmup = args.get_warmup_steps(state.max_steps) if hasattr(args, "get_warmup_steps") else args.warmup_steps
        if state.max_steps and warmup >= state.max_steps:
            # The table's default (1000 warmup steps) silently turns a short run into one at a near-zero rate.
            console.warn(
                f"--warmup-steps {warmup} >= the run's {state.max_steps} steps: the learning rate never reaches "
                f"--learning-rate {args.learning_rate}; lower --warmup-steps"
            )
        self.advance = self.display.enter_context(progress("train", total=state.max_steps, unit="steps"))
        if state.global_step:
            self.advance(state.global_step)  # resumed: the steps already done

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key, shown in (("loss", "loss"), ("learning_rate", "lr"), ("eval_loss", "eval_loss")):
            if logs and key in logs:
                self.shown[shown] = float(logs[key])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.advance is not None:
            self.advance(1, **self.shown, tokens_per_s=round(self.tokens_per_second(state)))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.display.close()
        self.advance = None


class InterruptCallback(TrainerCallback):
    """On SIGINT or SIGTERM, finish the current step, save a checkpoint and stop (preemption loses one step at most).

    A second signal while the checkpoint is written falls through to the previous handler (a second Ctrl-C kills).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; nothing to catch here
        for number in self.SIGNALS:
            self.previous[number] = signal.signal(number, self.handle)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(number)
            return
        self.received = number
        # Said by the process that got it (``[rank N]`` on others than rank 0): a scheduler may signal only some.
        console.warn(
            f"{signal.Signals(number).name} received: saving a checkpoint after this step, then stopping",
            every_process=True,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        received = self._received_anywhere(args.device)
        if received is not None:
            self.received = self.received or received
            control.should_save = True
            control.should_training_stop = True

    def _received_anywhere(self, device: Any) -> int | None:
        """The signal any process got. Processes must stop at the same step (saving a checkpoint is collective),
        and a signal reaches them at slightly different moments, so they agree once per step; one process alone
        needs no agreement."""

        if world_size() <= 1:
            return self.received
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.received or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None
