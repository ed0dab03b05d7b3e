"""voicetune: fine-tune an open LLM with QLoRA on your own writing, and prove the voice with numbers."""

__version__ = "0.1.0"
