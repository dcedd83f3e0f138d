"""The README's Python example runs and prints what it says."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    assert text.index("make demo") < text.index("make test") < text.index("```python")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    first = buf.getvalue().splitlines()[0].split()
    assert (
        first[0].startswith("0.5465") and abs(float(first[1]) - 0.1) < 1e-15 and first[2].startswith("1.0598")
    )


def test_readme_analyze_example_runs():
    """The second Python block (analyze on samples from the real instance) runs after the first."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2 and "kf.analyze" in blocks[1]
    ns = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        for code in blocks[:2]:
            exec(compile(code, "README.md", "exec"), ns)
    assert "prompt bootstrap" in buf.getvalue()
    assert ns["res"].bon.reward_lo[2] < ns["res"].bon.reward[2] < ns["res"].bon.reward_hi[2]
