"""A sweep written as a Python function: grokscope sweep examples/sweeps/python_spec.py:sweep --out DIR."""

from grokscope.sweep import make_spec


def sweep():
    # weight decays on a log range plus 0, from code (anything computable can go in a spec)
    wds = [0.0] + [round(0.1 * 2**i, 4) for i in range(5)]
    return make_spec(
        name="wd-python",
        base="tiny",
        set={"train.epochs": 100},
        axes={"optim.weight_decay": wds},
        seeds=2,
        outcome={"tau": 20},
    )
