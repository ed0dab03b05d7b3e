"""Setup planning: which torch build, Axolotl, flash-attn and MAX_JOBS fit this machine.

Pure functions over readings (voicetune.gpu) and a probe of the venv's Python (probe.py), standard
library only, so setup/*.sh can call `python3 -m voicetune.env.cli` before the venv has anything in it.
The shell scripts only execute what the plan says.
"""
