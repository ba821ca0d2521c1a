"""``@tool`` follows aimu 0.38's rules (issue 14): the schema, the docstring grammar, the refused signatures, and the
coercion of the arguments a model sends.

Each rule is pinned by an expected spec, so it holds without aimu; then aimu's own decorator and aimu_ray's are run
on a corpus of signatures and docstrings, each written with and without ``from __future__ import annotations``, and
must agree on everything they attach (aimu is the ``bench`` extra; those tests skip where it is not installed).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import pickle
import subprocess
import sys
import textwrap
import typing

import pydantic
import pytest

import aimu_ray
import aimu_ray.models
from aimu_ray.models import errors
from aimu_ray.models import tools as tools_module
from aimu_ray.models.tools import ToolArgumentError, ToolSignatureError, coerce_tool_arguments, function_spec, tool

HEADER = "from __future__ import annotations\n"


def define(source: str, *, future: bool = False, **names):
    """The function ``source`` defines, compiled in a namespace of its own that holds typing's names (and ``names``),
    so its hints resolve, or fail to, as they would in a user's module."""
    namespace: dict = {name: getattr(typing, name) for name in typing.__all__}
    namespace.update(names)
    exec(compile((HEADER if future else "") + textwrap.dedent(source), "<tool>", "exec", dont_inherit=True), namespace)
    return next(value for value in namespace.values() if getattr(value, "__code__", None) is not None
                and value.__code__.co_filename == "<tool>")


def props(func) -> dict:
    return function_spec(func)["function"]["parameters"]["properties"]


# --- the rules, without aimu --------------------------------------------------------------------------------------

@pytest.mark.parametrize("future", [False, True])
def test_optional_unwraps_to_the_inner_type_with_no_anyof_and_no_default(future):
    f = define('''
        def f(a: Optional[int], b: int | None = None, c: None | float = 1.0, d: Optional[list[str]] = None,
              e: Union[int, str, None] = None, g: int | str = 1):
            pass
    ''', future=future)
    assert props(f) == {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "number"},
                        "d": {"type": "array"}, "e": {"type": "string"}, "g": {"type": "string"}}
    assert function_spec(f)["function"]["parameters"]["required"] == ["a"]


def test_literal_is_an_enum_optional_or_not_typed_only_when_its_values_share_a_type():
    f = define('''
        def f(a: Literal["x", "y"], b: Optional[Literal["x", "y"]] = None, c: Literal[1, 2] | None = None,
              d: Literal[True, False] = True, e: Literal["x", 1] = "x"):
            pass
    ''')
    assert props(f) == {"a": {"enum": ["x", "y"], "type": "string"}, "b": {"enum": ["x", "y"], "type": "string"},
                        "c": {"enum": [1, 2], "type": "integer"}, "d": {"enum": [True, False], "type": "boolean"},
                        "e": {"enum": ["x", 1]}}


def test_types_map_by_their_origin_and_anything_else_is_a_string():
    f = define('''
        def f(a: str, b: int, c: float, d: bool, e: list, g: dict, h: list[int], i: dict[str, int], j: List[str],
              k: Dict[str, Any], l: tuple[int, str], m: set[int], n: bytes, o: Any, p: Annotated[int, "m"]):
            pass
    ''')
    assert {name: prop["type"] for name, prop in props(f).items()} == {
        "a": "string", "b": "integer", "c": "number", "d": "boolean", "e": "array", "g": "object", "h": "array",
        "i": "object", "j": "array", "k": "object", "l": "string", "m": "string", "n": "string", "o": "string",
        "p": "integer"}
    assert all(set(prop) == {"type"} for prop in props(f).values())        # no items, titles or defaults


def test_a_parameter_with_only_a_default_is_a_string_whatever_the_default():
    # The issue guessed aimu infers the type from the default; aimu 0.38 does not: it says "string".
    f = define("def f(a=3, b=2.5, c=True, d=None, e=[1], g='s'): pass")
    assert props(f) == {name: {"type": "string"} for name in "abcdeg"}
    assert function_spec(f)["function"]["parameters"]["required"] == []


def test_docstring_keeps_paragraphs_and_joins_wrapped_argument_lines():
    f = define('''
        def f(city: str, unit: str = "C", days: int = 1):
            """Current weather.

            Looks the city up first
            and then asks the service.

            Args:
                city (str): Where, a name
                    or a postcode.
                unit: C or F.
                days:
                    How many days,
                    at most 7.

            Returns:
                text: a summary, not an argument.
            """
    ''')
    spec = function_spec(f)["function"]
    assert spec["description"] == "Current weather.\n\nLooks the city up first\nand then asks the service."
    assert props(f) == {"city": {"type": "string", "description": "Where, a name or a postcode."},
                        "unit": {"type": "string", "description": "C or F."},
                        "days": {"type": "integer", "description": "How many days, at most 7."}}


def test_a_colon_ending_prose_line_is_not_a_section_and_other_sections_are_skipped():
    f = define('''
        def f(a: int):
            """Do this:
            add one.

            Example:
                a: 3 gives 4
            Parameters:
                a: the number.
            """
    ''')
    assert function_spec(f)["function"]["description"] == "Do this:\nadd one."
    assert props(f) == {"a": {"type": "integer", "description": "the number."}}


def test_no_docstring_is_an_empty_description_and_name_and_description_can_be_replaced():
    f = define("def f(a: int): pass")
    assert function_spec(f)["function"] == {"name": "f", "description": "",
                                            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}},
                                                           "required": ["a"]}}
    assert tool(name="g", description="D")(f).__tool_spec__["function"]["name"] == "g"
    assert f.__tool_spec__["function"]["description"] == "D"


@pytest.mark.parametrize("source, named", [
    ("def f(a: int, *args): pass", "'*args'"),
    ("def f(a: int, **options): pass", "'**options'"),
    ("def f(a: int, b): pass", "parameter 'b' on 'f' has no type hint and no default"),
])
def test_signatures_a_schema_cannot_describe_are_refused(source, named):
    with pytest.raises(ToolSignatureError, match=named.replace("*", r"\*")) as caught:
        tool(define(source))
    assert isinstance(caught.value, TypeError) and "@aimu_ray.tool" in str(caught.value)


def test_dispatch_attributes_are_aimus():
    f = tool(define("def f(a: int, b: Optional[str] = None, c=1): pass"))
    assert f.__tool_required__ == ["a"] and f.__tool_allowed_args__ == {"a", "b", "c"}
    assert set(f.__tool_param_adapters__) == {"a", "b"} and f.__tool_injected__ == []
    assert (f.__tool_is_async__, f.__tool_is_streaming__) == (False, False)
    assert (tool(define("async def g(): yield 1")).__tool_is_async__,
            tool(define("def h(): yield 1")).__tool_is_streaming__) == (True, True)


def test_coerce_is_lax_and_names_every_problem_in_one_message():
    f = tool(define('def f(n: int, flag: bool = False, mode: Optional[Literal["a", "b"]] = None, raw=0): pass'))
    assert coerce_tool_arguments(f, {"n": "5", "flag": "true", "mode": None, "raw": "x"}) == \
        {"n": 5, "flag": True, "mode": None, "raw": "x"}
    with pytest.raises(ToolArgumentError) as caught:
        coerce_tool_arguments(f, {"zzz": 1, "flag": "maybe", "mode": "c"})
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "invalid arguments for tool 'f': unexpected argument 'zzz'; missing required argument 'n'; "
        "'flag' input should be a valid boolean, unable to interpret input; 'mode' input should be 'a' or 'b'")
    plain = {"x": "1"}
    assert coerce_tool_arguments(lambda x: x, plain) is plain           # not built by @tool: passed through


def test_errors_are_typed_pickle_and_are_exported_where_the_house_exports_errors():
    for error, base in ((ToolSignatureError, TypeError), (ToolArgumentError, ValueError)):
        assert issubclass(error, base) and not issubclass(error, errors.ModelError)
        again = pickle.loads(pickle.dumps(error("why")))
        assert type(again) is error and str(again) == "why"
    for name in ("ToolSignatureError", "ToolArgumentError", "coerce_tool_arguments", "tool"):
        assert getattr(aimu_ray, name) is getattr(aimu_ray.models, name) is getattr(tools_module, name)
        assert name in aimu_ray.__all__ and name in aimu_ray.models.__all__
    assert aimu_ray.ToolSignatureError is errors.ToolSignatureError


def test_aimu_is_not_imported_at_runtime():
    code = ("import sys, aimu_ray, aimu_ray.models.tools as t\n"
            "t.tool(lambda a=1: a)\n"
            "assert not any(m == 'aimu' or m.startswith('aimu.') for m in sys.modules), 'aimu imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the same answers as aimu's own decorator ---------------------------------------------------------------------

CORPUS = [
    "def f(): pass",
    "def f(a: str, b: int, c: float, d: bool, e: list, g: dict): pass",
    "def f(a: list[str], b: dict[str, int], c: List[int], d: Dict[str, Any], e: tuple[int, str], g: set[int]): pass",
    "def f(a: bytes, b: Any, c: object, d: complex, e: Annotated[int, 'x'], g: Annotated[Optional[str], 1] = None):"
    " pass",
    "def f(a: Optional[int], b: int | None = None, c: None | str = 's', d: Optional[list[int]] = None): pass",
    "def f(a: Union[int, str], b: int | str, c: Optional[Union[int, str]] = None, d: int | str | None = None): pass",
    "def f(a: Literal['a', 'b'], b: Literal[1, 2], c: Literal[True, False], d: Literal['a', 1], e: Literal[1.5]): pass",
    "def f(a: Optional[Literal['x', 'y']] = None, b: Literal['x'] | None = None, c: Literal['a', None] = None): pass",
    "def f(a=3, b=2.5, c=True, d=None, e=[1], g='s', h={}): pass",
    "def f(a: None, b: 'int' = 1, c: 'Optional[int]' = None): pass",
    "def f(a: int, /, b: str, *, c: float = 1.0, d: bool): pass",
    "def f(a: Color, b: Level, c: Point, d: Model, e: Optional[Color] = None): pass",
    "def f(a: int, b: 'Nope' = 1, c=2): pass",
    "def f(a: None, b: 'Nope'): pass",        # refused, a bare None being no hint, unless annotations are strings
    "def f(a: int = None, b: str = None): pass",
    "async def f(a: int) -> int: return a",
    "def f(a: int):\n    yield a",
    "async def f(a: int):\n    yield a",
    '''
    def f(a: int, b: str):
        """One line."""
    ''',
    '''
    def f(city: str, unit: str = "C", days: int = 1, extra=None):
        """Current weather.

        Looks the city up first
        and then asks the service.

        Args:
            city (str): Where, a name
                or a postcode.
            unit: C or F.
            days:
                How many days,
                at most 7.
            ghost: documented, not a parameter.

        Returns:
            text: a summary.
        Raises:
            ValueError: never.
        """
    ''',
    '''
    def f(a: int, b: int = 0):
        """Do this:
        add them.

        Note:
            a: not an argument section.
        Arguments:
            a: first.
            - a bullet that continues it
            b (int, optional): second
                  deeper: still the second.
        Example:
            b: 3
        Parameters:
            b: said again.
        """
    ''',
    '''
    def f(a: int, b: int = 0):
        """Numpy style.

        Parameters
        ----------
        a : int
            The first.
        b : int
            The second.
        """
    ''',
    '''
    def f(a: int):
        """reST style.

        :param a: the number.
        :returns: nothing.
        """
    ''',
    '''
    def f(a: int):
        """
            Args:
        a: indented header, shallow entry.
        """
    ''',
    '''
    def f(a: int, b: str):
        """Args:
            a:
            b: only b has text.
        Args :
            a: not a header: it has a space.
        """
    ''',
    '''
    def f(a: int):
        """Summary.

        ARGS:
            a: upper-case header.

        Yields:
            nothing.
        """
    ''',
]

BAD = [
    "def f(a: int, *args): pass",
    "def f(a: int, **kwargs): pass",
    "def f(*args, **kwargs): pass",
    "def f(a: int, b): pass",
    "def f(a, b: int = 1): pass",
]


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Point:
    x: int


class Model(pydantic.BaseModel):
    x: int


NAMES = {"Color": Color, "Level": Level, "Point": Point, "Model": Model}


@pytest.fixture(scope="module")
def aimu_tools():
    return pytest.importorskip("aimu.tools.decorator")


def attached(func) -> dict:
    """Everything a decorator attached, in a form to compare (adapters by name: they are distinct objects)."""
    return {"spec": json.dumps(func.__tool_spec__), "injected": func.__tool_injected__,
            "adapters": sorted(func.__tool_param_adapters__), "allowed": func.__tool_allowed_args__,
            "required": func.__tool_required__, "async": func.__tool_is_async__,
            "streaming": func.__tool_is_streaming__}


def both(source: str, aimu_tools, future: bool, **names):
    theirs = aimu_tools.tool(define(source, future=future, **NAMES, **names))
    ours = tool(define(source, future=future, **NAMES, **names))
    return theirs, ours


def refusal(error: Exception) -> str:
    """A ``ToolSignatureError``'s message in aimu_ray's words: the decorator's name, and '**kwargs' with both stars."""
    return str(error).replace("@aimu.tool", "@aimu_ray.tool").replace("'*kwargs'", "'**kwargs'")


def decorated(decorate, refused: type, source: str, future: bool):
    try:
        return attached(decorate(define(source, future=future, **NAMES)))
    except refused as exc:
        return refusal(exc)


@pytest.mark.parametrize("future", [False, True], ids=["annotations", "future"])
@pytest.mark.parametrize("source", CORPUS, ids=range(len(CORPUS)))
def test_the_spec_and_dispatch_attributes_are_aimus(aimu_tools, source, future):
    assert decorated(tool, ToolSignatureError, source, future) == \
        decorated(aimu_tools.tool, aimu_tools.ToolSignatureError, source, future)      # json.dumps: key order too


@pytest.mark.parametrize("future", [False, True], ids=["annotations", "future"])
def test_tool_context_is_injected_and_left_out_as_in_aimu(aimu_tools, future):
    context = pytest.importorskip("aimu.tools.context").ToolContext
    source = ("def f(ctx: ToolContext, key: str, deps: ToolContext[dict] = None, maybe: Optional[ToolContext] = None,"
              " value: int = 0): pass")
    theirs, ours = both(source, aimu_tools, future, ToolContext=context)
    assert attached(ours) == attached(theirs)
    assert ours.__tool_injected__ == ["ctx", "deps", "maybe"]
    assert list(ours.__tool_spec__["function"]["parameters"]["properties"]) == ["key", "value"]


@pytest.mark.parametrize("future", [False, True], ids=["annotations", "future"])
@pytest.mark.parametrize("source", BAD, ids=range(len(BAD)))
def test_the_same_signatures_are_refused(aimu_tools, source, future):
    with pytest.raises(aimu_tools.ToolSignatureError) as theirs:
        aimu_tools.tool(define(source, future=future))
    with pytest.raises(ToolSignatureError) as ours:
        tool(define(source, future=future))
    assert str(ours.value) == refusal(theirs.value)


COERCE_TOOL = ('def f(n: int, flag: bool = False, ratio: float = 1.0, items: list[int] = None,'
               ' mode: Optional[Literal["a", "b"]] = None, when: Optional[str] = None, raw=0): pass')
CALLS = [
    {"n": 5}, {"n": "5"}, {"n": "5.0"}, {"n": 5.5}, {"n": "five"}, {"n": None}, {},
    {"n": 1, "flag": "true"}, {"n": 1, "flag": "yes"}, {"n": 1, "flag": "maybe"}, {"n": 1, "flag": 2},
    {"n": 1, "ratio": "0.5"}, {"n": 1, "ratio": "half"}, {"n": 1, "items": ["1", 2]}, {"n": 1, "items": "1,2"},
    {"n": 1, "items": None}, {"n": 1, "mode": "a"}, {"n": 1, "mode": "c"}, {"n": 1, "mode": None},
    {"n": 1, "when": 3}, {"n": 1, "raw": {"any": "thing"}}, {"zzz": 1}, {"zzz": 1, "n": "x", "mode": "c"},
]


def outcome(coerce, fn, arguments, aimu_tools):
    """What a coercion gave: the arguments, or the error's class name and message (either package's class)."""
    try:
        return ("ok", coerce(fn, copy.deepcopy(arguments)))
    except (ToolArgumentError, aimu_tools.ToolArgumentError) as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("arguments", CALLS, ids=range(len(CALLS)))
def test_coercion_matches_aimus_and_each_side_reads_the_others_tools(aimu_tools, arguments):
    theirs, ours = both(COERCE_TOOL, aimu_tools, False)
    expected = outcome(aimu_tools.coerce_tool_arguments, theirs, arguments, aimu_tools)
    assert outcome(coerce_tool_arguments, ours, arguments, aimu_tools) == expected
    assert outcome(coerce_tool_arguments, theirs, arguments, aimu_tools) == expected        # aimu's tool, ours
    assert outcome(aimu_tools.coerce_tool_arguments, ours, arguments, aimu_tools) == expected  # ours, aimu's agent


def test_callables_not_built_by_tool_pass_through_in_both(aimu_tools):
    arguments = {"anything": object()}
    assert coerce_tool_arguments(len, arguments) is arguments is aimu_tools.coerce_tool_arguments(len, arguments)


def test_the_error_classes_sit_where_aimus_do(aimu_tools):
    assert ToolSignatureError.__mro__[1:] == aimu_tools.ToolSignatureError.__mro__[1:]
    assert ToolArgumentError.__mro__[1:] == aimu_tools.ToolArgumentError.__mro__[1:]
