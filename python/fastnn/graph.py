"""The graph execution core: nodes (one per layer or op call), a topological order fixed when
the graph is made, and a forward/backward executor.

Every model is one of these graphs: a functional ``Model(inputs, outputs)`` is the graph its
layer calls recorded; ``Sequential`` is the chain case; a subclassed model (or a custom layer
written with ``call``) is the graph that tracing its ``call`` on symbolic inputs recorded.

Forward walks the nodes in order. Each node's operation (a layer, or a ``fastnn.ops``
function) computes ``(outputs, cache)``; the cache is kept per node on a ``Tape``, never on
the layer, so a layer called twice (a shared layer) has two caches. Masks (Keras masking)
flow along with the values when the graph has a layer that makes them.

Backward walks the nodes in reverse, sums gradients where paths meet, and has each node's
operation put its weight gradients into the model's flat gradient buffer. Which node writes
and which adds is decided once per plan, as PyTorch's AccumulateGrad does: a weight reached
by one node is written by it (no need to zero the buffer: on the MLP benchmark that zeroing
alone cost 3 % of a step); a weight reached by several nodes (a shared layer) is zeroed at
the start of the backward pass and added to by each. A node whose output gets no gradient
zeroes the gradients it would have written. Nodes whose inputs need no gradient skip that
product (the first Dense of a model skips ``dy @ W.T``), and nodes that nothing trainable
depends on are not visited at all.
"""


from .keras_tensor import KerasTensor
from .structure import Slot, fill, flatten, has_slot, template
from .operation import _TRAINABLE_EPOCH

# how a node's operation is called (see _Step)
_SIMPLE, _LIST, _GENERAL = 0, 1, 2


def _keyword_order(operation, kwargs):
    """The call's keyword names in the order of the operation's forward parameters, masks last:
    backward returns the gradients of tensor arguments in that order (a mask has none)."""
    import inspect

    try:
        parameters = list(inspect.signature(operation.forward).parameters)
    except (TypeError, ValueError):
        parameters = []

    def rank(name):
        if name == "mask" or name.endswith("_mask"):
            return (2, 0)
        return (0, parameters.index(name)) if name in parameters else (1, 0)

    return sorted(kwargs, key=rank)


def _mask_sources(operation, node):
    """Keras fills a call argument ``<name>_mask`` from the mask of the tensor passed as
    ``<name>`` (MultiHeadAttention's query_mask, value_mask, key_mask): the (keyword, index
    into the node's input tensors) pairs for this call, the ones given explicitly excepted."""
    import inspect

    try:
        parameters = inspect.signature(operation.forward).parameters
    except (TypeError, ValueError):
        return ()
    names = list(parameters)
    bound = list(zip(names, node.args_template)) + list(node.kwargs_template.items())
    return tuple((f"{name}_mask", value.index) for name, value in bound
                 if isinstance(value, Slot) and f"{name}_mask" in parameters
                 and f"{name}_mask" not in node.kwargs_template)


class Node:
    """One call of an operation: its arguments (with symbolic tensors) and its outputs.

    Attributes:
        operation: the layer or op that was called.
        input_tensors: the KerasTensors among the arguments, in call order (positional
            arguments first, then keyword arguments).
        output_tensors: the KerasTensors it returned (a list).
        outputs: what the call returned (a KerasTensor, or a list of them).
        call_args, call_kwargs: the arguments as given (kept for ``get_config``).
    """

    def __init__(self, operation, call_args=(), call_kwargs=None, outputs=None):
        self.operation = operation
        self.call_args = tuple(call_args)
        self.call_kwargs = dict(call_kwargs or {})
        tensors = []
        kinds = {"tensor": (lambda leaf: isinstance(leaf, KerasTensor), tensors)}
        self.args_template = template(self.call_args, kinds)
        self.kwargs_template = {name: template(self.call_kwargs[name], kinds)
                                for name in _keyword_order(operation, self.call_kwargs)}
        self.input_tensors = tensors
        self.outputs = outputs
        self.output_tensors = flatten(outputs) if outputs is not None else []
        self.index = len(operation._inbound_nodes)
        operation._inbound_nodes.append(self)
        for i, tensor in enumerate(self.output_tensors):
            tensor._keras_history = (operation, self.index, i)

    @property
    def is_input(self):
        """Whether this is an InputLayer's node."""
        return self.operation._is_input_layer

    @property
    def parent_nodes(self):
        return [t._keras_history[0]._inbound_nodes[t._keras_history[1]] for t in self.input_tensors]

    def __repr__(self):
        return f"<Node {self.operation.name}[{self.index}]>"


class Tape:
    """What one forward pass keeps for its backward pass."""

    __slots__ = ("caches", "activity", "penalty", "output_masks", "training")

    def __init__(self, n_steps, training):
        self.caches = [None] * n_steps if training else None
        self.activity = None  # step index -> output, for activity regularizers' gradients
        self.penalty = 0.0  # the activity regularizers' penalties
        self.output_masks = None
        self.training = training


_INFERENCE = Tape(0, False)  # what a plain inference pass returns: no caches, no penalties, no masks


class _Step:
    """A node compiled for the executor: slots instead of tensors, the call kind decided once."""

    __slots__ = ("op", "node", "in_slots", "out_slots", "kind", "training", "static", "single_out",
                 "consumes_mask", "mask_kwarg", "graph_masks", "mask_sources")

    def __init__(self, node, slot_of):
        self.node = node
        self.op = node.operation
        self.in_slots = [slot_of[id(t)] for t in node.input_tensors]
        self.out_slots = [slot_of[id(t)] for t in node.output_tensors]
        self.single_out = isinstance(node.outputs, KerasTensor)
        static = {k: v for k, v in node.kwargs_template.items() if not has_slot(v)}
        self.training = static.pop("training", None)
        self.static = static
        args, kwargs = node.args_template, node.kwargs_template
        tensor_kwargs = [k for k, v in kwargs.items() if has_slot(v)]
        if len(args) == 1 and isinstance(args[0], Slot) and not tensor_kwargs:
            self.kind = _SIMPLE
        elif (len(args) == 1 and isinstance(args[0], list) and all(isinstance(a, Slot) for a in args[0])
              and not tensor_kwargs):
            self.kind = _LIST
        else:
            self.kind = _GENERAL
        self.consumes_mask = bool(getattr(self.op, "_consumes_mask", False))
        self.mask_kwarg = "mask" in tensor_kwargs
        self.graph_masks = bool(getattr(self.op, "_graph_masks", False))
        self.mask_sources = tuple((name, self.in_slots[i]) for name, i in _mask_sources(self.op, node)) \
            if self.kind == _GENERAL else ()


class _Plan:
    """The backward walk for one set of 'which inputs need a gradient' and one trainable state."""

    __slots__ = ("epoch", "need_inputs", "order", "need", "accumulate", "variables", "shared", "requires", "walk")


class GraphError(ValueError):
    """A graph that cannot be run: disconnected outputs, or an input given twice."""


class Graph:
    """The executable graph between `inputs` and `outputs` (flat lists of KerasTensors).

    Args:
        inputs: list of KerasTensor (the graph's inputs, in order).
        outputs: list of KerasTensor (its outputs, in order).
        name: str, the owner's name for error messages.

    Raises:
        GraphError: an output that depends on a tensor that is not among the inputs (the
            message names the output and that tensor), or an input listed twice.
    """

    def __init__(self, inputs, outputs, name="model"):
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        for t in self.inputs + self.outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model '{name}': inputs and outputs must be symbolic tensors (from keras.Input "
                                f"and layer calls), got {type(t).__name__}")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise GraphError(f"Model '{name}': an input tensor is listed twice")
        self.nodes = self._topological_order()
        slot_of = {}
        for t in self.inputs:
            slot_of[id(t)] = len(slot_of)
        for node in self.nodes:
            for t in node.output_tensors:
                slot_of.setdefault(id(t), len(slot_of))
        self.n_slots = len(slot_of)
        self.input_slots = [slot_of[id(t)] for t in self.inputs]
        self.output_slots = [slot_of[id(t)] for t in self.outputs]
        self.steps = [_Step(node, slot_of) for node in self.nodes]
        self.consumers = self._consumers()
        self.has_masks = any(getattr(node.operation, "_may_produce_mask", lambda: False)() for node in self.nodes)
        self._plans = {}
        self._last_plan = None
        self._chain = self._as_chain()
        self._plain = self._as_plain()
        self._last_tape = None

    def _as_plain(self):
        """(operation, kind, input slot(s), output slot) per step when every step is a plain call (one
        output, no keyword arguments or training override, no masks or activity regularizers): the
        forward pass then skips the per-step checks (a few microseconds a step)."""
        if self.has_masks:
            return None
        plain = []
        for step in self.steps:
            if (step.kind == _GENERAL or not step.single_out or step.static or step.training is not None
                    or step.op.activity_regularizer is not None or step.op._graph_masks):
                return None
            ins = step.in_slots[0] if step.kind == _SIMPLE else step.in_slots
            plain.append((step.op, step.kind == _SIMPLE, ins, step.out_slots[0]))
        return plain

    def _as_chain(self):
        """The operations in order when the graph is a plain chain (one input, each step reading the
        previous one's only output, nothing else to do per step): inference then runs them in a
        tight loop (predict latency)."""
        if len(self.inputs) != 1 or len(self.outputs) != 1 or self.has_masks:
            return None
        slot = self.input_slots[0]
        for step in self.steps:
            if (step.kind != _SIMPLE or not step.single_out or step.static or step.training is not None
                    or step.in_slots[0] != slot or step.op.activity_regularizer is not None
                    or step.op._graph_masks):
                return None
            slot = step.out_slots[0]
        return [step.op for step in self.steps] if slot == self.output_slots[0] else None

    # ---- construction ---------------------------------------------------------------------------
    def _topological_order(self):
        """Nodes between the inputs and the outputs, each after the nodes it reads from
        (depth-first from the outputs in order, so a chain keeps its order)."""
        inputs = {id(t) for t in self.inputs}
        order, state = [], {}  # state: id(node) -> 1 visiting, 2 done
        for out in self.outputs:
            if id(out) in inputs:
                continue
            stack = [(self._producer(out, out), False)]
            while stack:
                node, done = stack.pop()
                if done:
                    if state.get(id(node)) != 2:
                        state[id(node)] = 2
                        order.append(node)
                    continue
                if state.get(id(node)):
                    continue
                state[id(node)] = 1
                stack.append((node, True))
                for t in reversed(node.input_tensors):
                    if id(t) in inputs:
                        continue
                    parent = self._producer(t, out)
                    if not state.get(id(parent)):
                        stack.append((parent, False))
        return order

    def _producer(self, tensor, output):
        history = tensor._keras_history
        if history is None:
            raise GraphError(f"Model '{self.name}': output {output._describe()} depends on the tensor "
                             f"{tensor._describe()}, which no layer made and which is not among the model's inputs")
        operation, index, _ = history
        node = operation._inbound_nodes[index]
        if node.is_input:
            names = ", ".join(repr(t.name) for t in self.inputs) or "none"
            raise GraphError(f"Model '{self.name}': output {output._describe()} is not connected to the model's "
                             f"inputs ({names}): it depends on the input {tensor._describe()}, which is not among "
                             "them. Pass every keras.Input the outputs are computed from to Model(inputs=...).")
        return node

    def _consumers(self):
        """slot -> number of steps reading it (and +1 for each time it is an output)."""
        counts = [0] * self.n_slots
        for step in self.steps:
            for s in step.in_slots:
                counts[s] += 1
        for s in self.output_slots:
            counts[s] += 1
        return counts

    def step_of(self, tensor):
        """The index of the step that makes `tensor` (None for an input)."""
        for k, node in enumerate(self.nodes):
            if any(t is tensor for t in node.output_tensors):
                return k
        return None

    # ---- forward ------------------------------------------------------------------------------------
    def forward(self, inputs, training=False, logits=None, penalties=False, masks=None, keep_cache=False,
                recycle=False):
        """Runs the graph.

        Args:
            inputs: list of arrays, one per graph input.
            training: bool: layers behave as in training (Dropout...) and every node keeps
                its cache for backward.
            logits: optional set of step indices whose operation outputs logits (the
                activation is fused with the loss).
            penalties: compute the activity regularizers' penalties even when not training.
            masks: optional list of masks of the inputs (None entries: no mask).
            keep_cache: keep every node's cache even when not training (a nested model
                called with training=False inside a training pass).
            recycle: the caller's previous training pass is finished (its backward done): let
                its caches go node by node as this pass makes new ones (see below). Only the
                trainer's top-level pass says so: a nested graph may run twice in one step.

        Returns:
            (list of output arrays, Tape).
        """
        keep = training or keep_cache
        if not keep and self._chain is not None and logits is None and masks is None and not penalties:
            x = inputs[0]
            for op in self._chain:
                x = op.forward(x, False)[0]
            return [x], _INFERENCE
        values = [None] * self.n_slots
        for s, x in zip(self.input_slots, inputs):
            values[s] = x
        if self._plain is not None and masks is None and (training or not keep):
            return self._forward_plain(values, training, keep, logits, recycle)
        slot_masks = None
        if self.has_masks or masks is not None:
            slot_masks = [None] * self.n_slots
            if masks is not None:
                for s, m in zip(self.input_slots, masks):
                    slot_masks[s] = m
        tape = Tape(len(self.steps), keep)
        caches = tape.caches
        # The previous training pass's caches are let go node by node as this pass makes new ones,
        # not all at once: freed in one go at the end of a step, glibc returns the memory to the
        # system and the next step page-faults it in again (an LSTM model trained 1.25x slower).
        previous = self._last_tape.caches if recycle and self._last_tape is not None else None
        for k, step in enumerate(self.steps):
            op = step.op
            mode = training if step.training is None else step.training
            kwargs = step.static
            if keep and not mode:  # inference behaviour, but backward will need the cache
                if op._training_dependent:
                    kwargs = {**kwargs, "keep_cache": True}
                else:
                    mode = True
            if slot_masks is not None and step.consumes_mask and not step.mask_kwarg:
                mask = slot_masks[step.in_slots[0]] if step.in_slots else None
                if step.graph_masks and len(step.in_slots) > 1:  # a nested graph: every input's mask
                    mask = [slot_masks[s] for s in step.in_slots]
                    mask = mask if any(m is not None for m in mask) else None
                if mask is not None:
                    kwargs = {**kwargs, "mask": mask}
            if slot_masks is not None and step.mask_sources:
                given = {name: slot_masks[s] for name, s in step.mask_sources if slot_masks[s] is not None}
                if given:
                    kwargs = {**kwargs, **given}
            if logits is not None and k in logits:
                kwargs = {**kwargs, "logits": True}
            if step.kind == _SIMPLE:
                x = values[step.in_slots[0]]
                y, cache = op.forward(x, mode, **kwargs) if kwargs else op.forward(x, mode)
            elif step.kind == _LIST:
                x = [values[s] for s in step.in_slots]
                y, cache = op.forward(x, mode, **kwargs)
            else:
                node = step.node
                filled = {"tensor": [values[s] for s in step.in_slots]}
                args = fill(node.args_template, filled)
                call_kwargs = {**fill(node.kwargs_template, filled), **kwargs}
                call_kwargs.pop("training", None)
                y, cache = op.forward(*args, training=mode, **call_kwargs)
                x = args[0] if args else None
            if caches is not None:
                caches[k] = cache
                if previous is not None:
                    previous[k] = None
            if step.single_out:
                values[step.out_slots[0]] = y
            else:
                if not isinstance(y, (list, tuple)) or len(y) != len(step.out_slots):
                    raise ValueError(f"Layer '{op.name}' returned {_count(y)} outputs, its node expects "
                                     f"{len(step.out_slots)}")
                for s, v in zip(step.out_slots, y):
                    values[s] = v
            if slot_masks is not None:
                self._propagate_masks(step, x, y, cache, slot_masks, values)
            regularizer = op.activity_regularizer
            if regularizer is not None and (keep or penalties):
                out = values[step.out_slots[0]]
                tape.penalty += regularizer.penalty(out)
                if keep:
                    tape.activity = tape.activity or {}
                    tape.activity[k] = out
        if slot_masks is not None:
            tape.output_masks = [slot_masks[s] for s in self.output_slots]
        if recycle:
            self._last_tape = tape
        return [values[s] for s in self.output_slots], tape

    def release(self):
        """Lets the last training pass's caches go (the end of fit)."""
        if self._last_tape is not None and self._last_tape.caches is not None:
            self._last_tape.caches[:] = [None] * len(self._last_tape.caches)
        self._last_tape = None

    def _forward_plain(self, values, training, keep, logits, recycle):
        """forward() for a graph of plain steps (see _as_plain)."""
        tape = Tape(len(self.steps), keep)
        caches = tape.caches
        previous = self._last_tape.caches if recycle and self._last_tape is not None else None
        for k, (op, simple, ins, out) in enumerate(self._plain):
            x = values[ins] if simple else [values[s] for s in ins]
            if logits is not None and k in logits:
                y, cache = op.forward(x, training, logits=True)
            else:
                y, cache = op.forward(x, training)
            values[out] = y
            if caches is not None:
                caches[k] = cache
                if previous is not None:
                    previous[k] = None
        if recycle:
            self._last_tape = tape
        return [values[s] for s in self.output_slots], tape

    def _propagate_masks(self, step, x, y, cache, slot_masks, values):
        op = step.op
        if step.graph_masks:  # a nested model: its own walk computed its outputs' masks
            out_masks = getattr(cache, "output_masks", None) or [None] * len(step.out_slots)
        else:
            if step.kind == _SIMPLE:
                in_mask = slot_masks[step.in_slots[0]]
            else:
                in_mask = [slot_masks[s] for s in step.in_slots]
                if all(m is None for m in in_mask):
                    in_mask = None
                elif step.kind == _GENERAL:
                    in_mask = in_mask[0]
            if in_mask is None and not op._may_produce_mask():
                return
            out_masks = op.compute_mask(x, in_mask)
            if step.single_out or not isinstance(out_masks, (list, tuple)):
                out_masks = [out_masks] * len(step.out_slots)
        for s, m in zip(step.out_slots, out_masks):
            slot_masks[s] = m

    # ---- backward -----------------------------------------------------------------------------------
    def backward(self, tape, d_outputs, need_input_grads=None, accumulate=False, after_node=None):
        """Backpropagates the outputs' gradients through the graph.

        Args:
            tape: the Tape of a ``forward(..., training=True)``.
            d_outputs: list of arrays (or None), one per output: d loss / d output.
            need_input_grads: list of bools, one per input (default all False): which
                inputs' gradients to compute.
            accumulate: add every weight gradient into the buffer (the caller zeroed it, or
                this graph is one of several calls of a shared model); False lets the plan
                decide (see the module docstring).
            after_node: None, or a function called with (plan, i) after the walk's step i
                (data parallelism starts the all-reduce of the gradients that are final).

        Returns:
            list of the inputs' gradients (None where not needed or not reached).
        """
        if tape.caches is None:
            raise RuntimeError(f"Model '{self.name}': backward needs a forward pass with training=True")
        need_inputs = tuple(bool(n) for n in (need_input_grads or [False] * len(self.inputs)))
        plan = self.plan(need_inputs)
        grads = [None] * self.n_slots
        for s, d in zip(self.output_slots, d_outputs):
            if d is not None:
                grads[s] = d if grads[s] is None else grads[s] + d
        if not accumulate:
            for v in plan.shared:
                v.grad.fill(0)
        caches, activity, requires = tape.caches, tape.activity, plan.requires
        for i, (k, op, in_slots, out_slots, single_out, need, node_accumulates, variables) in enumerate(plan.walk):
            if i and after_node is not None:
                after_node(plan, i - 1)
            if single_out:
                dy = grads[out_slots[0]]
                reached = dy is not None
            else:
                dy = [grads[s] for s in out_slots]
                reached = any(d is not None for d in dy)
            if activity is not None and k in activity:
                extra = op.activity_regularizer.gradient(activity[k])
                if single_out:
                    dy = extra.astype(activity[k].dtype) if dy is None else dy + extra.astype(dy.dtype, copy=False)
                else:
                    dy[0] = extra if dy[0] is None else dy[0] + extra.astype(dy[0].dtype, copy=False)
                reached = True
            add = accumulate or node_accumulates
            if not reached:
                if not add:
                    for v in variables:
                        v.grad.fill(0)
                continue
            dx = op.backward(caches[k], dy, need, add)
            if len(in_slots) == 1:
                s = in_slots[0]
                if requires[s]:
                    g = dx[0] if isinstance(dx, (list, tuple)) else dx
                    if g is not None:
                        grads[s] = g if grads[s] is None else grads[s] + g
            elif dx is not None:
                if not isinstance(dx, (list, tuple)):  # one gradient: the first input's (the rest are masks)
                    dx = (dx,)
                for s, g in zip(in_slots, dx):
                    if g is not None and requires[s]:
                        grads[s] = g if grads[s] is None else grads[s] + g
            for s in out_slots:  # let the memory go
                grads[s] = None
        if after_node is not None and plan.walk:
            after_node(plan, len(plan.walk) - 1)
        return [grads[s] if need else None for s, need in zip(self.input_slots, need_inputs)]

    def plan(self, need_inputs):
        """The backward plan for `need_inputs` (cached until a layer or weight changes trainability)."""
        epoch = _TRAINABLE_EPOCH[0]
        plan = self._last_plan
        if plan is not None and plan.epoch == epoch and plan.need_inputs == need_inputs:
            return plan
        plan = self._plans.get(need_inputs)
        if plan is not None and plan.epoch == epoch:
            self._last_plan = plan
            return plan
        plan = _Plan()
        plan.epoch = epoch
        plan.need_inputs = need_inputs
        requires = [False] * self.n_slots
        for s, need in zip(self.input_slots, need_inputs):
            requires[s] = need
        n = len(self.steps)
        plan.need = [False] * n
        plan.variables = [()] * n
        for k, step in enumerate(self.steps):
            variables = step.op._grad_variables()
            plan.variables[k] = variables
            needs = [requires[s] for s in step.in_slots]
            plan.need[k] = needs[0] if len(needs) == 1 else needs
            out_requires = any(needs) or bool(variables)
            for s in step.out_slots:
                requires[s] = out_requires
        plan.requires = requires
        plan.order = [k for k in reversed(range(n)) if any(requires[s] for s in self.steps[k].out_slots)]
        touches = {}
        for k in plan.order:
            for v in plan.variables[k]:
                touches[id(v)] = touches.get(id(v), 0) + 1
        plan.accumulate = [any(touches.get(id(v), 0) > 1 for v in plan.variables[k]) for k in range(n)]
        shared, seen = [], set()
        for k in plan.order:
            for v in plan.variables[k]:
                if touches[id(v)] > 1 and id(v) not in seen:
                    seen.add(id(v))
                    shared.append(v)
        plan.shared = shared  # the variables, not their grad arrays: a repack moves those
        plan.walk = [(k, self.steps[k].op, self.steps[k].in_slots, self.steps[k].out_slots, self.steps[k].single_out,
                      plan.need[k], plan.accumulate[k], plan.variables[k]) for k in plan.order]
        self._plans[need_inputs] = self._last_plan = plan
        return plan


def _count(y):
    return len(y) if isinstance(y, (list, tuple)) else 1
