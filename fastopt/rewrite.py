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

Anything else is left alone, and the function is then called as written: no
source, or source that does not compile to the function's own bytecode (a file
edited since, a wrapper); a closure or generator; ``x`` rebound; the array bound
twice, read through a slice (a view, which could be copied where ``out`` is
strided), or used other than by indexing; a body that can end without a return.
The user's own function is never modified.
"""

import ast
import builtins
import dis
import inspect
import linecache
import textwrap
import types
from collections import Counter

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
    except Exception:  # noqa: BLE001 - whatever fails, calling the function as written is safe
        return None


_NOT_PLAIN = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _rewrite(func, returns_value):
    if not isinstance(func, types.FunctionType):
        raise _UnsupportedError
    code = func.__code__
    if code.co_freevars or code.co_flags & _NOT_PLAIN:
        raise _UnsupportedError
    tree, definition = _parse(code)
    params = definition.args
    positional = params.posonlyargs + params.args
    if not positional or len(func.__defaults__ or ()) >= len(positional):
        raise _UnsupportedError  # no x, or x has a default: the new parameter would take it
    if any(isinstance(node, ast.Name) and node.id.startswith(OUT) for node in ast.walk(tree)):
        raise _UnsupportedError
    if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
                             ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom, ast.Await))
           for node in ast.walk(definition) if node is not definition):
        raise _UnsupportedError
    if not isinstance(definition.body[-1], (ast.Return, ast.Raise)):
        raise _UnsupportedError  # could end without a return (None), which is not a gradient
    x_name = positional[0].arg
    bound = _bound_names(definition)
    if bound[x_name]:
        raise _UnsupportedError  # x rebound: an allocation "like x" is no longer like out
    resolve = _Resolver(func.__globals__, set(code.co_varnames) | set(code.co_cellvars))

    returns = [node for node in ast.walk(definition) if isinstance(node, ast.Return)]
    if not returns:
        raise _UnsupportedError
    gradients = [_gradient_of(node, returns_value) for node in returns]
    if all(isinstance(g, ast.Name) for g in gradients):
        name = gradients[0].id
        if any(g.id != name for g in gradients) or bound[name] != 1:
            raise _UnsupportedError
        _replace_allocation(definition, name, x_name, gradients, resolve, bound)
    elif all(_is_array_literal(g, resolve) for g in gradients):
        if len({len(g.args[0].elts) for g in gradients}) != 1:
            raise _UnsupportedError  # the probe saw one length; every return must have it
    else:
        raise _UnsupportedError
    _ReturnRewriter(returns_value).visit(definition)

    new_param = ast.arg(arg=OUT)
    if params.posonlyargs:
        params.posonlyargs.insert(1, new_param)
    else:
        params.args.insert(1, new_param)
    definition.name = f"{code.co_name}_in_place"
    ast.fix_missing_locations(tree)
    rewritten = _function(tree, definition.name, code.co_filename, func.__globals__)
    rewritten.__defaults__ = func.__defaults__
    rewritten.__kwdefaults__ = func.__kwdefaults__
    return rewritten


def _parse(code):
    """The module holding just the function's definition (no decorators), if its source
    compiles to exactly the function's bytecode."""
    # the lines as inspect.getsource(code) finds them, without its search of sys.modules
    lines = linecache.getlines(code.co_filename)
    source = "".join(inspect.getblock(lines[code.co_firstlineno - 1:]))
    tree = ast.parse(textwrap.dedent(source))
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise _UnsupportedError
    definition = tree.body[0]
    definition.decorator_list = []
    if definition.name != code.co_name:
        raise _UnsupportedError
    ast.increment_lineno(tree, code.co_firstlineno - 1)
    if not _same_code(_function(tree, code.co_name, code.co_filename, {}).__code__, code):
        raise _UnsupportedError
    return tree, definition


def _function(tree, name, filename, namespace):
    """Compile ``tree`` and return its function ``name``, with ``namespace`` as its globals."""
    module = compile(tree, filename, "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == name)
    return types.FunctionType(code, namespace, name)


def _instructions(code):
    """The bytecode's operations and arguments; jump targets and the method-call form (which
    differs between a function compiled in its module and alone) left out."""
    return [("LOAD_ATTR" if i.opname == "LOAD_METHOD" else i.opname,
             None if isinstance(i.argval, types.CodeType) or i.opcode in dis.hasjrel
             or i.opcode in dis.hasjabs else i.argval)
            for i in dis.get_instructions(code) if i.opname not in ("CACHE", "NOP")]


def _same_code(a, b):
    nested = inspect.CO_NESTED
    fields = ("co_names", "co_varnames", "co_argcount", "co_posonlyargcount",
              "co_kwonlyargcount", "co_freevars", "co_cellvars")
    if (any(getattr(a, f) != getattr(b, f) for f in fields)
            or a.co_flags & ~nested != b.co_flags & ~nested
            or _instructions(a) != _instructions(b) or len(a.co_consts) != len(b.co_consts)):
        return False
    for x, y in zip(a.co_consts, b.co_consts, strict=True):
        if isinstance(x, types.CodeType):
            if not (isinstance(y, types.CodeType) and _same_code(x, y)):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _bound_names(definition):
    """How many times each name is bound in the body (parameters not counted)."""
    bound = Counter()
    for node in ast.walk(definition):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound[node.id] += 1
        elif isinstance(node, ast.alias):
            bound[node.asname or node.name.split(".")[0]] += 1
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound[node.name] += 1
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound[node.rest] += 1
    return bound


class _Resolver:
    """What a global name or ``module.attribute`` in the function refers to (None for a
    local name, which could be anything)."""

    def __init__(self, namespace, local_names):
        self.namespace = namespace
        self.local_names = local_names

    def __call__(self, node):
        if isinstance(node, ast.Name):
            if node.id in self.local_names:
                return None
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


def _float64_only(call, resolve):
    """The call's keywords are at most ``dtype=np.float64`` (or an alias of it)."""
    return all(k.arg == "dtype" and _is_float64(k.value, resolve) for k in call.keywords)


def _is_array_literal(node, resolve):
    """``np.array([e0, e1, ...])`` (or a tuple), at most with ``dtype=np.float64``."""
    if not (isinstance(node, ast.Call) and resolve(node.func) is np.array):
        return False
    if len(node.args) != 1 or not isinstance(node.args[0], (ast.List, ast.Tuple)):
        return False
    elements = node.args[0].elts
    if not elements or any(isinstance(e, ast.Starred) for e in elements):
        return False
    return _float64_only(node, resolve)


def _is_size_of(node, x_name, resolve, definition, bound):
    """``len(x)``, ``x.size``, ``x.shape``, ``x.shape[0]``, a number (the probe checked the
    gradient's length, and a number cannot change), or a name assigned one of these once,
    at the top of the body."""
    def is_x(n):
        return isinstance(n, ast.Name) and n.id == x_name

    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.Name):
        if bound[node.id] != 1:
            return False
        for statement in definition.body:
            if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name)
                    and statement.targets[0].id == node.id):
                return not isinstance(statement.value, ast.Name) and _is_size_of(
                    statement.value, x_name, resolve, definition, bound)
        return False
    if isinstance(node, ast.Attribute) and node.attr in ("size", "shape"):
        return is_x(node.value)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        index = node.slice
        return (node.value.attr == "shape" and is_x(node.value.value)
                and isinstance(index, ast.Constant) and index.value == 0)
    if isinstance(node, ast.Call) and resolve(node.func) is builtins.len:
        return len(node.args) == 1 and is_x(node.args[0]) and not node.keywords
    return False


def _allocation_kind(node, x_name, resolve, definition, bound):
    """``"zeros"`` or ``"empty"`` if ``node`` allocates an array shaped and typed as ``x``."""
    if not isinstance(node, ast.Call) or len(node.args) != 1:
        return None
    if not _float64_only(node, resolve):
        return None
    function = resolve(node.func)
    argument = node.args[0]
    if function in _ALLOCATE_LIKE:
        if not (isinstance(argument, ast.Name) and argument.id == x_name):
            return None
    elif function in _ALLOCATE_SIZED:
        if not _is_size_of(argument, x_name, resolve, definition, bound):
            return None
    else:
        return None
    return "zeros" if function in (np.zeros_like, np.zeros) else "empty"


def _replace_allocation(definition, name, x_name, gradients, resolve, bound):
    """``name = np.zeros_like(x)`` -> ``name = out; name[:] = 0.0``, if ``name`` is assigned
    once, at the top of the body, and otherwise only indexed (or asked its size) and returned."""
    returned = {id(g) for g in gradients}
    assignment = None
    for parent in ast.walk(definition):
        for field, value in ast.iter_fields(parent):
            for child in value if isinstance(value, list) else [value]:
                if not (isinstance(child, ast.Name) and child.id == name):
                    continue
                if isinstance(child.ctx, ast.Store):
                    assignment = parent  # the only binding of name (the caller checked)
                elif not (id(child) in returned or _is_element_access(parent, field)
                          or (isinstance(parent, ast.Attribute) and field == "value"
                              and parent.attr in _SIZE_ATTRIBUTES)):
                    raise _UnsupportedError
    if not (isinstance(assignment, ast.Assign) and assignment in definition.body
            and assignment.targets == [assignment.targets[0]]
            and isinstance(assignment.targets[0], ast.Name)):
        raise _UnsupportedError  # not a plain assignment at the top of the body
    kind = _allocation_kind(assignment.value, x_name, resolve, definition, bound)
    if kind is None:
        raise _UnsupportedError
    assignment.value = ast.Name(id=OUT, ctx=ast.Load())
    if kind == "zeros":
        zero = ast.parse(f"{name}[:] = 0.0").body[0]
        definition.body.insert(definition.body.index(assignment) + 1, zero)


def _is_element_access(parent, field):
    """``g[...]`` written to, or read without a slice: a read through a slice is a view of
    ``out``, which numpy may copy (``ravel``) where ``out`` is strided and ``g`` was not."""
    if not (isinstance(parent, ast.Subscript) and field == "value"):
        return False
    if not isinstance(parent.ctx, ast.Load):
        return True
    return not any(isinstance(node, (ast.Slice, ast.Starred))
                   or (isinstance(node, ast.Constant) and node.value in (None, Ellipsis))
                   for node in ast.walk(parent.slice))


class _ReturnRewriter(ast.NodeTransformer):
    """``return g`` -> ``return``; ``return np.array([e0, ...])`` -> ``out[0] = e0; ...``;
    with ``returns_value``, ``return f, ...`` returns ``f`` (evaluated first, as before)."""

    def __init__(self, returns_value):
        self.returns_value = returns_value

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
