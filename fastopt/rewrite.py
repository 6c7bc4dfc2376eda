"""Rewrite a user's gradient function to write into fastopt's buffer instead of allocating.

A scipy-style ``jac(x)`` returns a new array on every call. Inside a compiled loop
that allocation, with numba's reference counting, costs ~40 ns: more than a whole
2-D Adam iteration. Most gradients are written in one of two shapes::

    def jac(x):                          def jac(x):
        g = np.zeros_like(x)                 return np.array([dfdx0, dfdx1])
        g[0] = ...; g[1] += ...
        return g

:func:`gradient_in_place` recognizes them in the function's source and builds a
copy taking the output buffer as its second argument: ``g = np.zeros_like(x)``
becomes ``g = out; g[:] = 0.0``, and ``return np.array([e0, e1])`` becomes
``out[0] = e0; out[1] = e1``. The arithmetic is the user's, operation for
operation, so the numbers are the same bit for bit. The same holds for a
``fun(x)`` returning ``(f, g)`` (``jac=True``): the copy writes ``g`` and returns
``f``.

Anything else (no source, a closure, the array used other than by indexing, a
second assignment, another return) is left alone: the function is then called
as written. The user's own function is never modified.
"""

import ast
import builtins
import inspect
import textwrap
import types

import numpy as np

OUT = "_fastopt_gradient_out"
_ALLOCATE_LIKE = (np.zeros_like, np.empty_like)
_ALLOCATE_SIZED = (np.zeros, np.empty)
_FLOAT64 = (float, np.float64, np.double)
_SIZE_ATTRIBUTES = ("size", "shape", "ndim")


class _UnsupportedError(Exception):
    """The function is not one of the shapes :func:`gradient_in_place` rewrites."""


def gradient_in_place(func, returns_value=False):
    """A copy of ``func`` that writes its gradient into an extra second argument.

    Parameters
    ----------
    func : function
        A plain Python function (for a numba dispatcher, its ``py_func``):
        ``func(x, *args) -> g``, or ``-> (f, g)`` with ``returns_value``.
    returns_value : bool
        ``func`` returns ``(f, g)``; the copy returns ``f``.

    Returns
    -------
    function or None
        ``func_in_place(x, out, *args)``, writing ``g`` into ``out`` (and returning
        ``f`` with ``returns_value``), or None when ``func`` is not a shape this
        rewrite knows to be safe.
    """
    try:
        return _rewrite(func, returns_value)
    except (_UnsupportedError, OSError, TypeError, SyntaxError, IndentationError):
        return None


def _rewrite(func, returns_value):
    if not isinstance(func, types.FunctionType) or func.__code__.co_freevars:
        raise _UnsupportedError
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise _UnsupportedError
    definition = tree.body[0]
    params = definition.args
    positional = params.posonlyargs + params.args
    if not positional or len(func.__defaults__ or ()) >= len(positional):
        raise _UnsupportedError  # no x, or x has a default: the new parameter would take it
    if any(isinstance(node, ast.Name) and node.id == OUT for node in ast.walk(definition)):
        raise _UnsupportedError
    if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                             ast.ClassDef, ast.Global, ast.Nonlocal))
           for node in ast.walk(definition) if node is not definition):
        raise _UnsupportedError
    x_name = positional[0].arg
    resolve = _Resolver(func.__globals__)

    returns = [node for node in ast.walk(definition) if isinstance(node, ast.Return)]
    if not returns:
        raise _UnsupportedError
    gradients = [_gradient_of(node, returns_value) for node in returns]
    if all(isinstance(g, ast.Name) for g in gradients):
        if len({g.id for g in gradients}) != 1:
            raise _UnsupportedError
        _replace_allocation(definition, gradients[0].id, x_name, gradients, resolve)
    elif all(_is_array_literal(g, resolve) for g in gradients):
        if len({len(g.args[0].elts) for g in gradients}) != 1:
            raise _UnsupportedError  # the probe saw one length; every return must have it
    else:
        raise _UnsupportedError
    _ReturnRewriter(returns_value, resolve).visit(definition)

    new_param = ast.arg(arg=OUT)
    if params.posonlyargs:
        params.posonlyargs.insert(1, new_param)
    else:
        params.args.insert(1, new_param)
    definition.decorator_list = []
    definition.name = f"{func.__name__}_in_place"
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, func.__code__.co_firstlineno - 1)
    module = compile(tree, func.__code__.co_filename, "exec")
    code = next(c for c in module.co_consts
                if isinstance(c, types.CodeType) and c.co_name == definition.name)
    rewritten = types.FunctionType(code, func.__globals__, definition.name, func.__defaults__)
    rewritten.__kwdefaults__ = func.__kwdefaults__
    return rewritten


class _Resolver:
    """What a name or ``module.attribute`` in the function refers to, through its globals."""

    def __init__(self, namespace):
        self.namespace = namespace

    def __call__(self, node):
        if isinstance(node, ast.Name):
            if node.id in self.namespace:
                return self.namespace[node.id]
            return getattr(builtins, node.id, None)
        if isinstance(node, ast.Attribute):
            owner = self(node.value)
            return getattr(owner, node.attr, None) if isinstance(owner, types.ModuleType) else None
        return None


def _gradient_of(node, returns_value):
    """The gradient expression a ``return`` statement returns."""
    value = node.value
    if not returns_value:
        if value is None:
            raise _UnsupportedError
        return value
    if not (isinstance(value, ast.Tuple) and len(value.elts) == 2):
        raise _UnsupportedError
    return value.elts[1]


def _is_float64(node, resolve):
    return resolve(node) in _FLOAT64 or (isinstance(node, ast.Constant)
                                         and node.value in ("float64", "f8", "d"))


def _is_array_literal(node, resolve):
    """``np.array([e0, e1, ...])`` (or a tuple), at most with ``dtype=np.float64``."""
    if not (isinstance(node, ast.Call) and resolve(node.func) is np.array):
        return False
    if len(node.args) != 1 or not isinstance(node.args[0], (ast.List, ast.Tuple)):
        return False
    elements = node.args[0].elts
    if not elements or any(isinstance(e, ast.Starred) for e in elements):
        return False
    return all(k.arg == "dtype" and _is_float64(k.value, resolve) for k in node.keywords)


def _is_size_of(node, x_name):
    """``len(x)``, ``x.size``, ``x.shape`` or ``x.shape[0]``."""
    def is_x(n):
        return isinstance(n, ast.Name) and n.id == x_name

    if isinstance(node, ast.Attribute) and node.attr in ("size", "shape"):
        return is_x(node.value)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        index = node.slice
        return (node.value.attr == "shape" and is_x(node.value.value)
                and isinstance(index, ast.Constant) and index.value == 0)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return len(node.args) == 1 and is_x(node.args[0]) and not node.keywords
    return False


def _allocation_kind(node, x_name, resolve):
    """``"zeros"`` or ``"empty"`` if ``node`` allocates an array shaped and typed as ``x``."""
    if not isinstance(node, ast.Call) or len(node.args) != 1:
        return None
    if not all(k.arg == "dtype" and _is_float64(k.value, resolve) for k in node.keywords):
        return None
    function = resolve(node.func)
    argument = node.args[0]
    if function in _ALLOCATE_LIKE:
        if not (isinstance(argument, ast.Name) and argument.id == x_name):
            return None
    elif function in _ALLOCATE_SIZED:
        if not _is_size_of(argument, x_name):
            return None
    else:
        return None
    return "zeros" if function in (np.zeros_like, np.zeros) else "empty"


def _replace_allocation(definition, name, x_name, gradients, resolve):
    """``name = np.zeros_like(x)`` -> ``name = out; name[:] = 0.0``, if ``name`` is assigned
    once, at the top of the body, and otherwise only indexed (or asked its size) and returned."""
    returned = {id(g) for g in gradients}
    assignments = []
    for parent in ast.walk(definition):
        for field, value in ast.iter_fields(parent):
            for child in value if isinstance(value, list) else [value]:
                if not (isinstance(child, ast.Name) and child.id == name):
                    continue
                if isinstance(child.ctx, ast.Store):
                    assignments.append(parent)
                elif isinstance(child.ctx, ast.Del):
                    raise _UnsupportedError
                elif not (id(child) in returned
                          or (isinstance(parent, ast.Subscript) and field == "value")
                          or (isinstance(parent, ast.Attribute) and field == "value"
                              and parent.attr in _SIZE_ATTRIBUTES)):
                    raise _UnsupportedError
    if len(assignments) != 1 or assignments[0] not in definition.body:
        raise _UnsupportedError  # assigned twice, or inside a branch or loop
    assignment = assignments[0]
    if not (isinstance(assignment, ast.Assign) and len(assignment.targets) == 1
            and isinstance(assignment.targets[0], ast.Name)):
        raise _UnsupportedError
    kind = _allocation_kind(assignment.value, x_name, resolve)
    if kind is None:
        raise _UnsupportedError
    assignment.value = ast.Name(id=OUT, ctx=ast.Load())
    if kind == "zeros":
        zero = ast.parse(f"{name}[:] = 0.0").body[0]
        definition.body.insert(definition.body.index(assignment) + 1, zero)


class _ReturnRewriter(ast.NodeTransformer):
    """``return g`` -> ``return``; ``return np.array([e0, ...])`` -> ``out[0] = e0; ...``;
    with ``returns_value``, ``return f, ...`` returns ``f`` (evaluated first, as before)."""

    def __init__(self, returns_value, resolve):
        self.returns_value = returns_value
        self.resolve = resolve

    def visit_Return(self, node):
        value = None
        gradient = node.value
        statements = []
        if self.returns_value:
            value, gradient = node.value.elts
            if not isinstance(gradient, ast.Name):  # evaluate f before the gradient's elements
                statements.append(ast.Assign(targets=[ast.Name(id=OUT + "_f", ctx=ast.Store())],
                                             value=value))
                value = ast.Name(id=OUT + "_f", ctx=ast.Load())
        if not isinstance(gradient, ast.Name):
            for i, element in enumerate(gradient.args[0].elts):
                target = ast.Subscript(value=ast.Name(id=OUT, ctx=ast.Load()),
                                       slice=ast.Constant(i), ctx=ast.Store())
                statements.append(ast.Assign(targets=[target], value=element))
        statements.append(ast.Return(value=value))
        for statement in statements:
            ast.copy_location(statement, node)
        return statements
