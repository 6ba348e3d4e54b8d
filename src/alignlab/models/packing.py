"""Prefix-sharing packing: a padded batch run as a few dense rows of distinct tokens.

A training batch of a causal LM wastes work twice: on padding (rows of 36..100 tokens padded
to 100), and on prefixes that several rows share (the prompt of a preference pair is in both its
chosen and its rejected row; several samples of one prompt repeat it). Packing removes both.
The rows' real tokens are put in a trie: rows that begin with the same tokens share its nodes.
The trie is cut into packed rows of about ``PACK_ROW_TOKENS`` nodes (rows that share a prefix
land together), and each packed row runs with an attention mask that
lets a node see exactly its ancestors and itself, at its own position (its depth). Every
original token then gets the hidden state it would get in its own row, up to float rounding,
and a gather puts them back in the (B, T) layout; in autograd the shared nodes' gradients add
up as if each row had its own copy.

Used by ``models.forward.body_hidden_states`` for every scored or trained batch, where it is
worth it (``PACK_MIN_SAVING``) and where the model allows it: transformers models whose layers
are typed ``full_attention`` or ``sliding_attention`` (Gemma 3, the embedded model) with SDPA
attention, which accept one prepared mask per layer type. ``ALIGNLAB_PACKING=0`` in the
environment turns it off (every batch then runs padded, as in transformers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

PACK_ROW_TOKENS = 256
"""Nodes per packed row. Attention costs grow with the square of a row's length and the rest
linearly; at 256 the extra attention work is a few percent of a Gemma 3 270M layer's."""

ATTENTION_TOKENS = 2048
"""Row length at which a token's attention work roughly equals its other work (Gemma 3 270M:
4 query heads of 256 against ~5.5M weights a layer); used to weigh longer packed rows."""

PACK_MIN_SAVING = 0.15
"""Pack only when it removes at least this share of the batch's token positions."""

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class PackPlan:
    """How a (B, T) batch runs packed: ``input_ids``/``position_ids`` (R, L) of the packed rows,
    ``ancestor`` (R, L, L): query node may attend to key node, ``index`` (B, T): where each
    original position's hidden state is in the flattened (R * L) output (pad positions point at
    some real node; callers mask them as they would in the plain pass)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    ancestor: torch.Tensor
    index: torch.Tensor

    @property
    def positions(self) -> int:
        return self.input_ids.numel()


def supports_packing(body: torch.nn.Module) -> bool:
    """Whether ``body`` takes per-layer-type prepared masks (see the module docstring)."""
    if os.environ.get("ALIGNLAB_PACKING", "1") == "0":
        return False
    config = getattr(body, "config", None)
    types = getattr(config, "layer_types", None)
    return (bool(types) and set(types) <= set(LAYER_TYPES)
            and getattr(config, "_attn_implementation", None) == "sdpa")


def plan_packing(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 offset: int = 0, row_tokens: int | None = None, pad_id: int = 0) -> PackPlan | None:
    """The packed layout of a batch, or None when packing would not save ``PACK_MIN_SAVING``.

    Each row's real tokens (``attention_mask`` 1, anywhere in the row: left and right padding
    both work) must sit at positions ``offset, offset + 1, ...``, which is what counting real
    tokens gives; a batch with other positions is not packed.
    """
    rows, width = input_ids.shape
    if rows < 2:
        return None
    row_tokens = row_tokens or PACK_ROW_TOKENS
    ids_list, mask_list, pos_list = input_ids.tolist(), attention_mask.tolist(), position_ids.tolist()
    children: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    paths: list[list[int]] = []  # per row: its nodes, root first
    columns: list[list[int]] = []  # per row: the column of each node
    for ids, mask, pos in zip(ids_list, mask_list, pos_list):
        path, cols, parent = [], [], -1
        for col, (token, real, p) in enumerate(zip(ids, mask, pos)):
            if not real:
                continue
            if p != offset + len(path):
                return None
            key = (parent, token)
            node = children.get(key)
            if node is None:
                node = children[key] = len(tokens)
                tokens.append(token)
            path.append(node)
            cols.append(col)
            parent = node
        if not path:
            return None
        paths.append(path)
        columns.append(cols)
    if len(tokens) > (1 - PACK_MIN_SAVING) * rows * width:
        return None

    # Rows that share more than the prefix common to all go together (a unit); units go into
    # bins first-fit, largest first. Each bin is padded to the longest, and a row's attention
    # work grows with its length: among capacities from an even split into bins of
    # ``row_tokens`` up to twice that, the one with the least estimated work wins.
    units = sharing_units(paths)
    unit_nodes = [list(dict.fromkeys(n for r in unit for n in paths[r])) for unit in units]  # their union, once
    order = sorted(range(len(units)), key=lambda u: -len(unit_nodes[u]))
    longest = len(unit_nodes[order[0]])
    limit = max(row_tokens, longest)
    capacity = max(longest, -(-len(tokens) // -(-len(tokens) // limit)))
    best: tuple[float, list] | None = None
    while capacity <= 2 * limit:
        bins = fill_bins([units[u] for u in order], [unit_nodes[u] for u in order], capacity)
        length = max(len(slots) for _, slots in bins)
        work = len(bins) * length * (1 + length / ATTENTION_TOKENS)
        if best is None or work < best[0]:
            best = (work, bins)
        capacity += max(1, capacity // 25)
    bins = best[1]
    length = max(len(slots) for _, slots in bins)
    if len(bins) * length > (1 - PACK_MIN_SAVING) * rows * width:
        return None

    packed_ids = torch.full((len(bins), length), pad_id, dtype=torch.long)
    packed_pos = torch.zeros((len(bins), length), dtype=torch.long)
    ancestor = torch.zeros((len(bins), length, length), dtype=torch.bool)
    index = torch.zeros((rows, width), dtype=torch.long)
    for b, (members, slots) in enumerate(bins):
        base = b * length
        for r in members:
            where = torch.tensor([slots[n] for n in paths[r]])
            packed_ids[b, where] = torch.tensor([tokens[n] for n in paths[r]])
            packed_pos[b, where] = torch.arange(offset, offset + len(where))
            ancestor[b][where[:, None], where[None, :]] |= torch.ones(len(where), len(where), dtype=torch.bool).tril()
            index[r] = base + where[0]  # padding columns: any real node of the row
            index[r, columns[r]] = base + where
        ancestor[b, range(len(slots), length), range(len(slots), length)] = True  # padding sees itself: no empty rows
    return PackPlan(packed_ids.to(input_ids.device), packed_pos.to(input_ids.device),
                    ancestor.to(input_ids.device), index.to(input_ids.device))


def sharing_units(paths: list[list[int]], least: int = 3) -> list[list[int]]:
    """Rows grouped by the deepest node they share with another row, where that is at least
    ``least`` tokens past the prefix all rows share: rows that meet there (a preference pair's
    chosen and rejected, several samples of one prompt) share those nodes, and packing them apart
    would compute them twice. Other rows are units of their own."""
    common = 0
    while all(len(p) > common and p[common] == paths[0][common] for p in paths):
        common += 1
    uses: dict[int, int] = {}
    for path in paths:
        for n in path:
            uses[n] = uses.get(n, 0) + 1
    groups: dict[int, list[int]] = {}
    for r, path in enumerate(paths):
        depth = max((d for d, n in enumerate(path) if uses[n] > 1), default=-1)
        groups.setdefault(path[depth] if depth >= common + least else -1 - r, []).append(r)
    return list(groups.values())


def fill_bins(units: list[list[int]], nodes: list[list[int]], capacity: int) -> list[tuple[list[int], dict[int, int]]]:
    """Units of rows (largest first) with their nodes into bins, first fit, each bin's node union
    at most ``capacity`` (a unit larger than that gets a bin of its own): [(rows, node -> slot)]."""
    bins: list[tuple[list[int], dict[int, int]]] = []
    for unit, wanted in zip(units, nodes):
        for members, slots in bins:
            if len(slots) + sum(1 for n in wanted if n not in slots) <= capacity:
                break
        else:
            members, slots = [], {}
            bins.append((members, slots))
        members.extend(unit)
        for n in wanted:
            slots.setdefault(n, len(slots))
    return bins


def layer_masks(body: torch.nn.Module, plan: PackPlan, past: int = 0) -> dict[str, torch.Tensor]:
    """One (R, 1, L, past + L) boolean mask per layer type of ``body``: the plan's ancestor
    relation (every packed node also sees the ``past`` cached positions before it), limited to
    the sliding window for ``sliding_attention`` layers."""
    config = body.config
    rows, length = plan.input_ids.shape
    allowed = plan.ancestor
    key_pos = plan.position_ids
    if past:
        allowed = torch.cat([allowed.new_ones(rows, length, past), allowed], dim=-1)
        key_pos = torch.cat([torch.arange(past, device=key_pos.device).expand(rows, -1), key_pos], dim=-1)
    masks = {}
    for kind in set(config.layer_types):
        mask = allowed
        if kind == "sliding_attention" and getattr(config, "sliding_window", None):
            mask = mask & ((plan.position_ids[:, :, None] - key_pos[:, None, :]) < config.sliding_window)
        masks[kind] = mask[:, None]
    return masks


def packed_body_hidden_states(body: torch.nn.Module, plan: PackPlan, cache=None, past: int = 0) -> torch.Tensor:
    """Run ``body`` on the packed rows and gather the hidden states back: (B, T, D)."""
    kwargs = {"cache": cache, "use_cache": True} if cache is not None else {}
    hidden = body(input_ids=plan.input_ids, attention_mask=layer_masks(body, plan, past),
                  position_ids=plan.position_ids, **kwargs).last_hidden_state  # (R, L, D)
    return hidden.reshape(-1, hidden.shape[-1])[plan.index]
