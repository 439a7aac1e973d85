"""The spec's metric vectors, and the metrics run on the real OOD steps with gold predictions."""

import pytest

from papers.umi.data import OOD_TEST, load_trajectories, static_steps
from papers.umi.metrics import arg_f1, parse_step, rouge_l_f1, static_metrics, step_arg_f1


@pytest.mark.parametrize(
    ("ref", "pred", "want"),
    [
        ('{"a":1,"b":2}', '{"a":1,"b":2}', 1.0),
        ('{"a":1,"b":2}', '{"a":1,"b":3}', 0.75),
        ('{"a":1,"b":2}', '{"a":1}', 2 / 3),
        ('{"a":1,"b":2}', '{"a":1,"b":2,"c":0}', 0.8),
        ('{"a":1,"b":2}', "not json", 0.0),
        ("{}", "{}", 1.0),
        ("{}", '{"x":1}', 0.0),
        ('{"a":1}', "[1]", 0.0),
    ],
)
def test_arg_f1_vectors(ref, pred, want):
    assert arg_f1(ref, pred) == pytest.approx(want, abs=1e-4)


def test_arg_f1_drops_bad_reference_and_is_asymmetric():
    assert arg_f1("{bad", '{"a":1}') is None
    assert arg_f1('{"a":1,"b":2}', '{"a":1}') == pytest.approx(2 / 3, abs=1e-4)
    assert arg_f1('{"a":1}', '{"a":1,"b":2}') == pytest.approx(2 / 3, abs=1e-4)
    assert arg_f1('{"a":1}', "not json") == 0.0  # swapped: the step is dropped instead
    assert arg_f1("{}", '"x"') == 0.0 and arg_f1('"x"', "{}") == 0.0


def test_wrong_action_scores_zero_whatever_the_args():
    ref = parse_step('assistant: t Next: caller.</s>caller: Action: a\nAction Input: {"x": 1}</s>')
    pred = parse_step('asssitant: t Next: caller.</s>caller: Action: b\nAction Input: {"x": 1}')
    assert (ref.action, ref.args, pred.action) == ("a", '{"x": 1}', "b")
    assert step_arg_f1(ref, pred) == 0.0


def _step(ref, pred, tools=("a",)):
    return {"reference": ref, "prediction": pred, "tool_names": list(tools)}


CALL = 'assistant: t Next: caller.</s>caller: Action: a\nAction Input: {"x": 1}</s>'
FIN = "assistant: t Next: conclusion.</s>conclusion: the answer</s>"
GIVE = "t Next: give up."


def test_metrics_identity_and_hallucination_denominator():
    m = static_metrics(
        [_step(CALL, CALL.replace("assistant", "asssitant")), _step(FIN, FIN), _step(GIVE, GIVE)]
    )
    assert (m["Plan ACC"], m["Act. EM"], m["Arg. F1"], m["Hallu."], m["Rouge-L"]) == (100, 100, 100, 0, 100)
    hallu = CALL.replace("Action: a", "Action: zzz")
    m = static_metrics([_step(CALL, hallu), _step(FIN, FIN), _step(GIVE, GIVE), _step(GIVE, GIVE)])
    assert m["Hallu."] == 25.0 and m["Act. EM"] == 0.0
    m = static_metrics([_step(CALL, FIN)])  # a non-call prediction is a wrong action, not a hallucination
    assert (m["Act. EM"], m["Hallu."], m["Plan ACC"]) == (0.0, 0.0, 0.0)


def test_rouge_l():
    assert rouge_l_f1("a b c", "a b c") == 1.0
    assert rouge_l_f1("a x c", "a b c") == pytest.approx(2 / 3)
    assert rouge_l_f1("", "a") == 0.0


def test_ood_steps_counts_and_gold_predictions_score_100(tb):
    steps = static_steps(load_trajectories(tb / OOD_TEST), "ood")
    assert len(steps) == 1547
    assert [sum(s["plan"] == p for s in steps) for p in ("call", "finish", "give up")] == [1146, 294, 107]

    def gold(s):
        if s["plan"] == "give up":
            return s["planner"]
        tag = "caller" if s["plan"] == "call" else "conclusion"
        return f"asssitant: {s['planner']}</s>{tag}: {s['gold']}"

    m = static_metrics([{**s, "prediction": gold(s)} for s in steps])
    assert (m["Plan ACC"], m["Act. EM"], m["Hallu."], m["Rouge-L"]) == (100, 100, 0, 100)
    assert m["n call"] == 1146 and m["n f1"] <= 1146
