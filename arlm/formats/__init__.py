"""Interchange with other tools: ``hf`` (Hugging Face transformers) and ``arpa`` (KenLM, SRILM)."""
