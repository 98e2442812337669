"""The file names of a model directory and of a training run, in one table.

``checkpoint`` writes the model files, ``arlm.training`` the run files; every
module that looks for one of these names takes it from here.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"  #: family, hyperparameters, vocab kind, document mode, arlm version
WEIGHTS_FILE = "model.safetensors"  #: weights or tables (safetensors)
VOCAB_FILE = "vocab.json"  #: char, byte and word vocabularies
TOKENIZER_FILE = "tokenizer.json"  #: the BPE vocabulary (a Hugging Face ``tokenizers`` file)

STATE_FILE = "training_state.safetensors"  #: a neural run's resumable state
DATA_FILE = "training_data.safetensors"  #: the encoded train/val data a run resumes with
LOG_FILE = "train_log.jsonl"  #: one JSON record per logged step
PLOT_FILE = "loss.png"  #: the loss curves

#: What a neural run writes besides the model files (none of it is needed to load the model).
RUN_FILES = frozenset({STATE_FILE, DATA_FILE, LOG_FILE, PLOT_FILE})
#: What a neural run writes before its first checkpoint.
RUN_LEFTOVERS = frozenset({DATA_FILE, LOG_FILE, PLOT_FILE})

TOKENS_HEADER = "tokens.json"  #: a token directory's header (``arlm tokenize``)
TOKENS_FILE = "tokens.bin"  #: its token ids, uint16/uint32
OFFSETS_FILE = "offsets.bin"  #: its document offsets, int64
