"""The recall task: every answer is the value bound to the query's key exactly `distance` back."""
import pytest
import torch

from longnet.model import LanguageModel, ModelConfig
from analysis.attention_graph import layer_matrix
from longnet.recall import RecallTask, answer_positions, recall_accuracy, train_recall


@pytest.mark.parametrize("distance", [1, 2, 17, 100, 127])
def test_every_answer_is_the_value_bound_distance_back(distance):
    task = RecallTask(seq_len=128, pairs=6, keys=16, values=16, filler=8)
    tokens, targets = task.batch(20, distance, torch.Generator().manual_seed(distance))
    assert tokens.shape == targets.shape == (20, 128)
    assert tokens.min() >= 1 and tokens.max() < task.vocab_size
    for row in range(20):
        answers = (targets[row] != -100).nonzero().flatten().tolist()
        assert answers  # at least one pair fits
        queries = tokens[row, answers] - task.first_query
        assert ((queries >= 0) & (queries < task.keys)).all()  # the answer positions hold queries
        assert len(set(queries.tolist())) == len(answers)  # distinct keys: one answer each
        values = targets[row, answers] - task.first_value
        assert ((values >= 0) & (values < task.values)).all()
        bound = tokens[row, [t - distance for t in answers]]
        assert torch.equal(bound, task.pair_token(queries, values))  # pair(k, v), distance back
        # the key appears nowhere else as a pair or query token: the answer is unambiguous
        pair_tokens = tokens[row][(tokens[row] >= 1) & (tokens[row] < task.first_query)]
        assert len(pair_tokens) == len(answers)
        query_tokens = tokens[row][(tokens[row] >= task.first_query) & (tokens[row] < task.first_value)]
        assert len(query_tokens) == len(answers)


def test_bad_tasks_and_distances_are_refused():
    with pytest.raises(ValueError, match="pairs"):
        RecallTask(seq_len=16, pairs=8)
    with pytest.raises(ValueError, match="seq_len"):
        RecallTask(seq_len=0)
    with pytest.raises(ValueError, match=r"distance=200 is invalid; allowed: 1 \.\. 127"):
        RecallTask(seq_len=128).batch(1, 200, torch.Generator())


def test_accuracy_of_a_model_that_reads_the_bound_value_is_one():
    task = RecallTask(seq_len=64, pairs=4, keys=8, values=8, filler=8)

    class Oracle(torch.nn.Module):  # reads the pair token 9 back and answers its value, one-hot
        def forward(self, tokens):
            pair = torch.roll(tokens, shifts=9, dims=1)  # token at t - 9
            value = (pair - 1) % task.values + task.first_value
            return torch.nn.functional.one_hot(value, task.vocab_size).float()

    assert recall_accuracy(Oracle(), task, distance=9, n=16) == 1.0
    assert recall_accuracy(Oracle(), task, distance=10, n=16) < 0.5


def test_answer_positions_are_the_answers_recall_accuracy_scores():
    task = RecallTask(seq_len=64, pairs=6, keys=16, values=16, filler=16)

    class RightLate(torch.nn.Module):  # answers correctly only from position 32 on
        def forward(self, tokens):
            pair = torch.roll(tokens, shifts=12, dims=1)
            value = (pair - 1) % task.values + task.first_value
            value[:, :32] = task.first_filler  # never an answer
            return torch.nn.functional.one_hot(value, task.vocab_size).float()

    queries = answer_positions(task, distance=12, n=40, seed=3)
    assert len(queries) == 40 * task.pairs  # every sequence holds all its pairs at this distance
    assert queries.min() >= 12
    share_late = (queries >= 32).float().mean().item()
    assert recall_accuracy(RightLate(), task, distance=12, n=40, seed=3) == pytest.approx(share_late)


def test_the_paper_rule_connects_every_distance_the_truncated_schedule_cannot():
    """The benchmark's base (8, 16, 32) x (1, 2, 4) at length 64 by the paper's rule is
    (8, 16, 32, 64) x (1, 2, 4, 8): a distance divisible by 8 is one layer anywhere (branch
    (64, 8)), across the 32-boundary the truncated schedule never crosses."""
    params = {"segment_lengths": [8, 16, 32], "dilation_rates": [1, 2, 4]}
    layers = layer_matrix("longnet", params, seq_len=64, heads=8)
    q = torch.arange(64)
    for d in (8, 24, 40, 56):
        assert (layers[q[d:], q[d:] - d] == 1).all()
    assert torch.isfinite(layers[63, :]).all()  # two layers reach every earlier position


def test_longnet_pinned_connects_a_pair_and_its_query_only_inside_a_widest_segment():
    """The truncated ablation (8, 16, 32) x (1, 2, 4) pinned at length 64 with 8 heads: no branch
    crosses a multiple of 32, and a distance divisible by 4 inside one 32-segment is one layer
    (branch (32, 4) with the head whose offset is the positions' residue)."""
    params = {"segment_lengths": [8, 16, 32], "dilation_rates": [1, 2, 4], "extend": False}
    layers = layer_matrix("longnet", params, seq_len=64, heads=8)
    q = torch.arange(64)
    for d in (24, 12, 4):
        p = q[d:] - d
        same = (q[d:] // 32) == (p // 32)
        assert (layers[q[d:][same], p[same]] == 1).all()
        assert torch.isinf(layers[q[d:][~same], p[~same]]).all()
    # the share of held-out answers it connects, as recall_reach computes it
    task = RecallTask(seq_len=64, pairs=6, keys=16, values=16, filler=16)
    queries = answer_positions(task, distance=24, n=32, seed=0)
    connected = (layers[queries, queries - 24] <= 2).float().mean()
    assert connected == ((queries // 32) == ((queries - 24) // 32)).float().mean()
    assert 0 < connected < 1


def test_training_lowers_the_loss_and_is_seeded():
    task = RecallTask(seq_len=16, pairs=2, keys=4, values=4, filler=4)

    def run():
        torch.manual_seed(0)
        model = LanguageModel(ModelConfig(vocab_size=task.vocab_size, n_layer=1, d_model=16,
                                          n_head=2, d_ff=32, max_seq_len=16))
        return train_recall(model, task, steps=30, batch=16, lr=1e-2, warmup=2, seed=3)

    first, second = run(), run()
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    assert sum(r["loss"] for r in first[-5:]) < sum(r["loss"] for r in first[:5])
    with pytest.raises(ValueError, match="multiple of parts"):
        train_recall(None, task, steps=1, batch=6, lr=1e-3, warmup=0, seed=0)


def test_validation_and_test_splits_are_different_sequences_the_same_for_every_model():
    from longnet.recall import heldout

    task = RecallTask(seq_len=64, pairs=6, keys=16, values=16, filler=16)
    test = [t for t, _ in heldout(task, 12, n=8, seed=0, split="test")]
    again = [t for t, _ in heldout(task, 12, n=8, seed=0, split="test")]
    validation = [t for t, _ in heldout(task, 12, n=8, seed=0, split="validation")]
    assert all(torch.equal(a, b) for a, b in zip(test, again))
    assert not any(torch.equal(a, b) for a, b in zip(test, validation))
    with pytest.raises(ValueError, match="split"):
        next(heldout(task, 12, split="train"))


def test_choose_lr_takes_the_best_mean_validation_accuracy_then_the_lower_loss():
    from longnet.recall import choose_lr

    rows = [dict(lr=1e-3, distance=2, accuracy=0.5, final_loss=1.0),
            dict(lr=1e-3, distance=6, accuracy=0.7, final_loss=1.0),
            dict(lr=3e-3, distance=2, accuracy=0.9, final_loss=0.5),
            dict(lr=3e-3, distance=6, accuracy=0.5, final_loss=0.5),
            dict(lr=1e-2, distance=2, accuracy=0.2, final_loss=2.0),
            dict(lr=1e-2, distance=6, accuracy=0.2, final_loss=2.0)]
    assert choose_lr(rows) == 3e-3  # mean 0.7 beats 0.6 and 0.2
    rows[1]["accuracy"] = 0.9  # 1e-3 now ties 3e-3 at 0.7: the lower final loss wins
    assert choose_lr(rows) == 3e-3
    rows[0]["final_loss"] = rows[1]["final_loss"] = 0.1
    assert choose_lr(rows) == 1e-3
    with pytest.raises(ValueError, match="no rows"):
        choose_lr([])
