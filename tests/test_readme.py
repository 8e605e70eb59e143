"""The README's quick start runs as written."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_quick_start_runs_as_written(tmp_path):
    section = README.read_text().split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses, pipeline_output = result.stdout.strip().splitlines()[-2:]
    attention_loss, ctc_loss = map(float, losses.split()[:2])
    assert attention_loss > 0 and ctc_loss > 0
    assert pipeline_output.startswith("{'text': ")
    assert (tmp_path / "my-asr" / "model.safetensors").exists()
    assert (tmp_path / "my-asr" / "processor_config.json").exists()


def test_readme_opens_with_the_two_setup_commands():
    first_screen = README.read_text()[:1500]
    assert "make demo" in first_screen and "make test" in first_screen
