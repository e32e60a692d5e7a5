"""examples/mnist_poptorch.py, PopTorch's MNIST tutorial with only the import line changed:
its --check passes in-process at a reduced size, and tilegraph appears on one line only."""
import pathlib
import re
import runpy
import tokenize

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mnist_poptorch.py"


def test_mnist_tutorial_reaches_the_stated_accuracy(capsys):
    script = runpy.run_path(str(SCRIPT), run_name="mnist_poptorch")
    rc = script["main"](["--check", "--train-samples", "3072", "--epochs", "1",
                         "--test-samples", "512"])
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy on \d+ samples: tilegraph ([0-9.]+)", out)[1])
    assert accuracy >= script["ACCURACY_THRESHOLD"], out
    assert rc == 0, out


def test_only_the_import_line_is_tilegraph_specific():
    # Code that names tilegraph (strings and comments aside): the import line, nothing else.
    with tokenize.open(SCRIPT) as f:
        rows = {tok.start[0] for tok in tokenize.generate_tokens(f.readline)
                if tok.type == tokenize.NAME and tok.string == "tilegraph"}
    lines = SCRIPT.read_text().splitlines()
    assert [lines[r - 1] for r in sorted(rows)] == ["import tilegraph as poptorch"]
