"""The recall task: every answer is the value of the key exactly `distance` positions back."""
import pytest
import torch

from longnet.recall import RecallTask, recall_accuracy


@pytest.mark.parametrize("distance", [2, 3, 17, 100, 126])
def test_every_answer_is_the_value_distance_back(distance):
    task = RecallTask(seq_len=128, pairs=6, keys=16, values=16, filler=8)
    tokens, targets = task.batch(20, distance, torch.Generator().manual_seed(distance))
    assert tokens.shape == targets.shape == (20, 128)
    assert tokens.min() >= 1 and tokens.max() < task.vocab_size
    for row in range(20):
        answers = (targets[row] != -100).nonzero().flatten().tolist()
        assert answers  # at least one pair fits
        keys = tokens[row, [t - distance for t in answers]]
        assert torch.equal(keys, tokens[row, answers])  # the query repeats the key
        assert torch.equal(targets[row, answers], tokens[row, [t - distance + 1 for t in answers]])
        assert len(set(keys.tolist())) == len(answers)  # distinct keys: one answer each
        assert ((keys >= 1) & (keys <= task.keys)).all()
        values = targets[row, answers]
        assert ((values > task.keys) & (values <= task.keys + task.values)).all()


def test_bad_tasks_and_distances_are_refused():
    with pytest.raises(ValueError, match="pairs"):
        RecallTask(seq_len=16, pairs=8)
    with pytest.raises(ValueError, match="seq_len"):
        RecallTask(seq_len=0)
    with pytest.raises(ValueError, match=r"distance=200 is invalid; allowed: 2 \.\. 126"):
        RecallTask(seq_len=128).batch(1, 200, torch.Generator())


def test_accuracy_of_a_model_that_copies_the_answer_is_one():
    task = RecallTask(seq_len=64, pairs=4, keys=8, values=8, filler=8)

    class Oracle(torch.nn.Module):  # looks `distance` back and returns the next token, one-hot
        def forward(self, tokens):
            shifted = torch.roll(tokens, shifts=-1 + 9, dims=1)  # token at t - 9 + 1
            return torch.nn.functional.one_hot(shifted, task.vocab_size).float()

    assert recall_accuracy(Oracle(), task, distance=9, n=16) == 1.0
