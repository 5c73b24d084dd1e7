"""The README's Python example runs as written."""
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_api_example_runs(capsys):
    text = open(README).read()
    section = text[text.index("<!-- api:start -->"):text.index("<!-- api:end -->")]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3                                        # one line of actions per person
    for line in lines:                                            # each person is told to change something,
        assert line != "{}" and "->" in line and "city" not in line   # and never the immutable city
