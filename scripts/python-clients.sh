#!/usr/bin/env bash
# Python clients written by others, for the interoperability tests of
# `kb serve`: the official OpenAI client and LangChain's OpenAI integration,
# pinned, in a virtual environment cached under ~/.cache. Prints its python.
#
#   scripts/python-clients.sh
set -euo pipefail
venv=${KB_PY_CLIENTS:-$HOME/.cache/kb/py-clients}
pins="openai==1.109.1 langchain-openai==0.3.35"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/kb-pins" 2>/dev/null)" != "$pins" ]; then
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086 # the pins are words
  "$venv/bin/pip" install --quiet $pins >&2
  echo "$pins" > "$venv/kb-pins"
fi
echo "$venv/bin/python"
