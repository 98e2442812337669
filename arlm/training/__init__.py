"""The training loop for neural language models (GPT and LSTM), as small parts.

One loop for every neural family (:func:`run_training` in :mod:`.loop`). It
minimises the ``mean_nll`` (nats per predicted token) of the next token, with:

* AdamW, weight decay on matrices only, or Muon for the hidden matrices
  (:mod:`.optimizer`, :mod:`.muon`); bf16 autocast of the forward where native;
* a linear warm-up, then cosine decay of the learning rate to a floor, fitted
  to ``max_steps`` and/or the wall-clock ``max_time`` (:mod:`.schedule`);
* gradient-norm clipping;
* batches of random windows of ``block_size + 1`` tokens (``documents="file"``)
  or of random documents padded to the longest in the batch, the padding masked
  out of the loss (``documents="lines"``) (:mod:`.batches`);
* evaluation on val every ``eval_interval`` steps over a fixed set of batches;
  the model directory always holds the best (lowest val loss) weights;
* exact resume from ``training_state.safetensors`` (:mod:`.state`);
* ``train_log.jsonl`` and ``loss.png`` (:mod:`.report`);
* a thread count fixed by the user or adapted to the load (:mod:`.cpu`);
* several processes (DDP) under torchrun (:mod:`.distributed`).

Files in the output directory: the model directory of ``arlm.checkpoint``
(``config.json``, ``model.safetensors``, vocab), ``training_state.safetensors``,
``training_data.safetensors``, ``train_log.jsonl`` and ``loss.png``.
"""

from .batches import IGNORE, TokenData, eval_batches, get_batch, token_data_from_dir
from .cpu import keep_freed_memory
from .loop import LOG_INTERVAL, Trainer, compiles, estimate_val_loss, run_training
from .optimizer import make_optimizer, native_bf16, uses_bf16
from .report import LOG_FILE, PLOT_FILE
from .schedule import lr_at, schedule_progress
from .settings import DEFAULT_MAX_TIME, CountSettings, TrainSettings, parse_duration
from .state import DATA_FILE, STATE_FILE, STATE_VERSION, read_data, read_state, write_state

__all__ = [
    "CountSettings", "DATA_FILE", "DEFAULT_MAX_TIME", "IGNORE", "LOG_FILE", "LOG_INTERVAL", "Trainer", "compiles", "PLOT_FILE", "STATE_FILE", "STATE_VERSION",
    "TokenData", "TrainSettings", "estimate_val_loss", "eval_batches", "get_batch", "keep_freed_memory", "lr_at",
    "make_optimizer", "native_bf16", "parse_duration", "read_data", "read_state", "run_training", "schedule_progress",
    "token_data_from_dir", "uses_bf16", "write_state",
]
