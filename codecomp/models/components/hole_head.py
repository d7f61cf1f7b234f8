"""Prediction at a hole: a distribution over the value vocabulary mixed with a pointer that copies
an identifier occurring elsewhere in the same file (pointer-generator, See et al. 2017)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass
class HoleScores:
    """Per hole: vocabulary log-probabilities, the generate-vs-copy gate, and copy attention.

    Attributes:
        vocab_log_probs: (H, V) log P_vocab(value | hole).
        gate: (H,) probability of generating from the vocabulary rather than copying.
        copy_attention: (P,) attention of each (hole, occurrence) pair; sums to 1 over a hole's pairs.
    """

    vocab_log_probs: torch.Tensor
    gate: torch.Tensor
    copy_attention: torch.Tensor


class PointerGeneratorHead(nn.Module):
    def __init__(self, state_dim: int, n_values: int, pointer_dim: int = 128) -> None:
        super().__init__()
        self.vocab = nn.Sequential(nn.Linear(state_dim, state_dim), nn.Tanh(), nn.Linear(state_dim, n_values))
        self.gate = nn.Linear(state_dim, 1)
        self.query = nn.Linear(state_dim, pointer_dim)
        self.key = nn.Linear(state_dim, pointer_dim)

    def forward(
        self,
        states: torch.Tensor,
        hole_nodes: torch.Tensor,
        occurrence_nodes: torch.Tensor,
        pair_hole: torch.Tensor,
        pair_occurrence: torch.Tensor,
    ) -> HoleScores:
        """Args: states (N, D) encoder states of all nodes; the hole and occurrence node indices;
        the (P,) pairs of a hole with an occurrence in its own tree."""
        hole_states = states[hole_nodes]  # (H, D)
        queries = self.query(hole_states)  # (H, K)
        keys = self.key(states[occurrence_nodes])  # (O, K)
        scores = (queries[pair_hole] * keys[pair_occurrence]).sum(-1) / math.sqrt(queries.shape[-1])  # (P,)
        return HoleScores(
            vocab_log_probs=torch.log_softmax(self.vocab(hole_states).float(), dim=-1),
            gate=torch.sigmoid(self.gate(hole_states)).squeeze(-1).float(),
            copy_attention=_grouped_softmax(scores.float(), pair_hole, len(hole_nodes)),
        )


def _grouped_softmax(scores: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of (P,) scores within each group (a hole's pairs)."""
    if scores.numel() == 0:
        return scores
    peak = torch.full((n_groups,), -torch.inf, device=scores.device).scatter_reduce(0, groups, scores, "amax")
    weights = torch.exp(scores - peak[groups])  # (P,)
    totals = torch.zeros(n_groups, device=scores.device).index_add(0, groups, weights)
    return weights / totals[groups]


def target_probability(
    scores: HoleScores, target_ids: torch.Tensor, pair_hole: torch.Tensor, pair_match: torch.Tensor, unk_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H,) P(hidden text), generated (if in the vocabulary) or copied from a matching occurrence, and
    (H,) whether the text is reachable at all; an unreachable text has probability 0.

    Take the log of the reachable ones only: log(0) would put 0/0 into the gradients of the others.
    """
    in_vocab = target_ids != unk_id
    generate = scores.gate * scores.vocab_log_probs.gather(1, target_ids[:, None]).squeeze(1).exp()
    generate = torch.where(in_vocab, generate, torch.zeros_like(generate))
    copied = torch.zeros_like(generate).index_add(0, pair_hole, scores.copy_attention * pair_match.float())
    copyable = torch.zeros(len(target_ids), device=target_ids.device).index_add(0, pair_hole, pair_match.float()) > 0
    return generate + (1 - scores.gate) * copied, in_vocab | copyable
