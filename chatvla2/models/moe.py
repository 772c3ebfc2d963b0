"""The dynamic mixture of experts that replaces each decoder MLP (docs/reference/model.md, point 2).

router (one linear layer) -> top-k of E logits -> softmax over those k -> weighted sum of the k
experts' SwiGLU outputs. No shared or static expert. Experts start as copies of the pretrained
dense MLP ("upcycling": `DynamicMoE.from_dense`).

Two numerically equivalent forms, chosen by `implementation`, because they export differently:
- "gather": gather the k chosen experts' weights per token, then multiply. Reads only the chosen
  experts' bytes: the right form for a single-token decode step.
- "dense": run every expert on every token and weight the outputs with the top-k mask. One plain
  matrix product per expert (what weight quantizers recognise), at E/k times the expert bytes per
  token: the right form for a prefill, where many tokens touch every expert anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.contract.config import MOE_FORMS
from chatvla2.contract.errors import InvalidInput

# "grouped" is for training only (never exported): each expert runs on just the tokens routed to it.
IMPLEMENTATIONS = MOE_FORMS + ("grouped",)


class SwiGLU(nn.Module):
    """The dense Qwen2 MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DynamicMoE(nn.Module):
    def __init__(
        self,
        hidden: int,
        intermediate: int,
        num_experts: int,
        top_k: int,
        implementation: str = "gather",
    ):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.router = nn.Linear(hidden, num_experts, bias=False)
        # Expert weights stacked along a leading expert axis, each in nn.Linear's (out, in) layout.
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))
        for weight in (self.gate_proj, self.up_proj, self.down_proj):
            bound = 1.0 / weight.shape[-1] ** 0.5
            nn.init.uniform_(weight, -bound, bound)
        self.implementation = implementation

    @property
    def implementation(self) -> str:
        return self._implementation

    @implementation.setter
    def implementation(self, name: str) -> None:
        if name not in IMPLEMENTATIONS:
            raise InvalidInput(f"unknown MoE implementation {name!r}; choose from {IMPLEMENTATIONS}")
        self._implementation = name

    @classmethod
    def from_dense(cls, mlp: SwiGLU, num_experts: int, top_k: int = 2) -> DynamicMoE:
        """Upcycle a dense MLP: every expert a copy of it. Whatever the router picks, the output
        equals the dense MLP's, since the k routing weights sum to one."""
        intermediate, hidden = mlp.gate_proj.weight.shape
        moe = cls(hidden, intermediate, num_experts, top_k)
        with torch.no_grad():
            moe.gate_proj.copy_(mlp.gate_proj.weight.expand(num_experts, -1, -1))
            moe.up_proj.copy_(mlp.up_proj.weight.expand(num_experts, -1, -1))
            moe.down_proj.copy_(mlp.down_proj.weight.expand(num_experts, -1, -1))
        return moe.to(mlp.gate_proj.weight.dtype)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (T, H) -> routing weights (T, k), expert indices (T, k), router logits (T, E).
        The router runs in float32: its top-k decides which weights are read at all."""
        logits = F.linear(x.float(), self.router.weight.float())
        top_logits, indices = torch.topk(logits, self.top_k, dim=-1, sorted=True)
        weights = torch.softmax(top_logits, dim=-1)
        return weights.to(x.dtype), indices, logits

    def forward(self, x: torch.Tensor, return_router_logits: bool = False):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        weights, indices, logits = self.route(tokens)
        if self.implementation == "gather":
            out = self._gather(tokens, weights, indices)
        elif self.implementation == "grouped":
            out = self._grouped(tokens, weights, indices)
        else:
            out = self._dense(tokens, weights, indices)
        out = out.reshape(shape)
        return (out, logits) if return_router_logits else out

    def _gather(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # index_select on the expert axis (ONNX Gather: whole contiguous expert matrices copied)
        # and matrix-vector products on the weights as stored (MatMul, no transposed copies);
        # indexing + einsum exported as GatherND + Einsum, 70% of an ONNX Runtime decode step.
        def chosen(stack: torch.Tensor) -> torch.Tensor:
            return stack.index_select(0, indices.reshape(-1)).reshape(*indices.shape, *stack.shape[1:])

        column = x[:, None, :, None]  # (T, 1, H, 1)
        gate = torch.matmul(chosen(self.gate_proj), column)  # (T, k, I, 1)
        up = torch.matmul(chosen(self.up_proj), column)
        expert_out = torch.matmul(chosen(self.down_proj), F.silu(gate) * up).squeeze(-1)  # (T, k, H)
        return (expert_out * weights.unsqueeze(-1)).sum(dim=1)

    def _dense(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # (T, E) combination weights: the routing weight where expert e was chosen, else 0.
        # Written as a comparison with arange (Equal + ReduceSum in ONNX), not a scatter.
        experts = torch.arange(self.num_experts, device=x.device)
        chosen = (indices.unsqueeze(-1) == experts).to(weights.dtype)  # (T, k, E)
        combine = (chosen * weights.unsqueeze(-1)).sum(dim=1)
        # One matrix product per expert with its own constant weight (unrolled over the fixed E),
        # so an exported graph has plain MatMuls that weight quantizers recognise.
        out = torch.zeros_like(x)
        for e in range(self.num_experts):
            hidden = F.silu(F.linear(x, self.gate_proj[e])) * F.linear(x, self.up_proj[e])
            out = out + combine[:, e : e + 1] * F.linear(hidden, self.down_proj[e])
        return out

    def _grouped(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # The training form: the tokens routed to expert e gathered (not its weights), one matrix
        # product per expert on those rows, the weighted results added back in place: k/E of the
        # dense form's FLOPs. Data-dependent shapes, so it is not an export form.
        token_of_slot = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.top_k)
        expert_of_slot, weight_of_slot = indices.reshape(-1), weights.reshape(-1)
        out = torch.zeros_like(x)
        for e in range(self.num_experts):
            slots = (expert_of_slot == e).nonzero().squeeze(1)
            if slots.numel() == 0:
                continue
            rows = token_of_slot[slots]
            routed = x.index_select(0, rows)
            hidden = F.silu(F.linear(routed, self.gate_proj[e])) * F.linear(routed, self.up_proj[e])
            out = out.index_add(0, rows, weight_of_slot[slots, None] * F.linear(hidden, self.down_proj[e]))
        return out

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """A slow loop over tokens and their chosen experts, for tests."""
        tokens = x.reshape(-1, x.shape[-1])
        weights, indices, _ = self.route(tokens)
        out = torch.zeros_like(tokens)
        for t in range(tokens.shape[0]):
            for slot in range(self.top_k):
                e = int(indices[t, slot])
                hidden = F.silu(self.gate_proj[e] @ tokens[t]) * (self.up_proj[e] @ tokens[t])
                out[t] += weights[t, slot] * (self.down_proj[e] @ hidden)
        return out.reshape(x.shape)


def load_balancing_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-Transformer auxiliary loss (Fedus et al. 2021), for k experts per token:
    E * sum_e f_e * P_e, where f_e is the fraction of routing slots given to expert e and P_e the
    mean router probability of e. Equals k when the traffic is perfectly uniform."""
    num_experts = router_logits.shape[-1]
    logits = router_logits.reshape(-1, num_experts).float()
    probabilities = torch.softmax(logits, dim=-1)
    chosen = torch.topk(logits, top_k, dim=-1).indices
    fraction = F.one_hot(chosen, num_experts).float().sum(dim=1).mean(dim=0)
    return num_experts * (fraction * probabilities.mean(dim=0)).sum()
