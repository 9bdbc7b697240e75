"""Nested structures of values (lists, tuples and dicts of arrays or tensors), as layer and ops
calls take them: their leaves in order, values packed like them, and call templates in which
the leaves of interest (symbolic tensors, weights) become numbered slots to fill at run time."""


def flatten(structure):
    """The leaves of nested lists, tuples and dicts (dicts in insertion order)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    if isinstance(structure, dict):
        return [leaf for item in structure.values() for leaf in flatten(item)]
    return [structure]


def map_leaves(structure, fn):
    """`structure` with each leaf replaced by fn(leaf)."""
    if isinstance(structure, (list, tuple)):
        return type(structure)(map_leaves(item, fn) for item in structure)
    if isinstance(structure, dict):
        return {k: map_leaves(v, fn) for k, v in structure.items()}
    return fn(structure)


def pack_like(structure, leaves):
    """Nests `leaves` (an iterator or list) like `structure`."""
    leaves = iter(leaves)
    return map_leaves(structure, lambda _: next(leaves))


class Slot:
    """A placeholder in a call template: the `index`-th value of a kind ("tensor", "variable")."""

    __slots__ = ("kind", "index")

    def __init__(self, kind, index):
        self.kind, self.index = kind, index


def template(structure, kinds):
    """`structure` with each leaf that `kinds` claims replaced by a Slot.

    Args:
        kinds: dict kind -> (test(leaf), list): a leaf passing a kind's test is appended to
            its list and becomes ``Slot(kind, its position)``.
    """
    def slot(leaf):
        for kind, (test, collected) in kinds.items():
            if test(leaf):
                collected.append(leaf)
                return Slot(kind, len(collected) - 1)
        return leaf

    return map_leaves(structure, slot)


def fill(template, values):
    """The template with each Slot replaced by ``values[slot.kind][slot.index]``."""
    return map_leaves(template, lambda t: values[t.kind][t.index] if isinstance(t, Slot) else t)


def has_slot(template):
    """Whether a template holds any Slot."""
    return any(isinstance(leaf, Slot) for leaf in flatten(template))
