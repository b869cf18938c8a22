"""The action parser: every fixture family, extra formats, bad input, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_ai_router.agent import actions
from local_ai_router.agent.actions import parse_arguments, parse_reply, strip_thinking
from local_ai_router.types import Action, InvalidAction, ParsedReply, ToolCall

# ARCHITECTURE.md section 3's built-in tools.
# fmt: off
BUILTINS = [
    "read_file", "write_file", "edit_file", "list_directory", "search_files", "run_shell",
    "git_status", "git_diff", "git_log", "git_add", "git_commit", "git_push", "git_pull",
    "git_branch", "git_checkout", "list_skills", "search_skills", "read_skill", "task_complete",
    "spawn_agents",
]
# fmt: on
FIXTURE_NAME = "tool_call_outputs.jsonl"


def _fixture_path() -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / FIXTURE_NAME
    return (
        shared if shared.is_file() else Path(__file__).resolve().parent / "fixtures" / FIXTURE_NAME
    )


def _fixture_cases() -> list[dict[str, Any]]:
    lines = _fixture_path().read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


CASES = _fixture_cases()


def act(content: str | None, tool_calls: Any = None, tools: Any = BUILTINS) -> Action:
    reply = parse_reply(content, tool_calls, tools)
    assert reply.invalid is None, reply.invalid
    assert reply.action is not None, f"no action in {content!r}"
    return reply.action


def invalid(content: str | None, tool_calls: Any = None, tools: Any = BUILTINS) -> InvalidAction:
    reply = parse_reply(content, tool_calls, tools)
    assert reply.action is None, reply.action
    assert reply.invalid is not None, f"no invalid action in {content!r}"
    return reply.invalid


def plain(content: str | None, tool_calls: Any = None, tools: Any = BUILTINS) -> ParsedReply:
    reply = parse_reply(content, tool_calls, tools)
    assert reply.action is None, reply.action
    assert reply.invalid is None, reply.invalid
    return reply


# --------------------------------------------------------------------------- fixtures


def test_fixture_corpus_is_present() -> None:
    assert len(CASES) >= 30
    assert (Path(__file__).resolve().parent / "fixtures" / FIXTURE_NAME).is_file()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_fixture(case: dict[str, Any]) -> None:
    reply = parse_reply(case["content"], case["tool_calls"], BUILTINS)
    expect = case["expect"]
    assert not (reply.action and reply.invalid)
    if expect is None:
        assert reply.action is None and reply.invalid is None
        assert reply.text == (case["content"] or "").strip()
    elif "error" in expect:
        assert reply.action is None
        assert reply.invalid is not None and reply.invalid.kind == expect["error"]
    else:
        assert reply.action is not None, reply.invalid
        assert (reply.action.tool, reply.action.args) == (expect["tool"], expect["args"])
        assert reply.action.source == ("native" if case["tool_calls"] else "text")
        assert reply.action.call_id


# --------------------------------------------------------------------------- text formats


def test_deepseek_v3_fenced_form() -> None:
    text = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>read_file\n"
        '```json\n{"path": "src/app.py"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    action = act(text)
    assert (action.tool, action.args, action.source) == (
        "read_file",
        {"path": "src/app.py"},
        "text",
    )


def test_deepseek_v31_form_keeps_prose() -> None:
    text = (
        "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>git_log<｜tool▁sep｜>"
        '{"max_count": 3}<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>'
    )
    reply = parse_reply(text, None, BUILTINS)
    assert reply.action is not None
    assert (reply.action.tool, reply.action.args) == ("git_log", {"max_count": 3})
    assert reply.text == "Let me check."


def test_deepseek_ascii_markers_and_kimi_form() -> None:
    ascii_ds = '<|tool_call_begin|>read_file<|tool_sep|>{"path": "a"}<|tool_call_end|>'
    assert act(ascii_ds).args == {"path": "a"}
    kimi = (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.read_file:0"
        '<|tool_call_argument_begin|>{"path": "a"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    assert (act(kimi).tool, act(kimi).args) == ("read_file", {"path": "a"})


def test_deepseek_marker_without_a_call_is_bad_json() -> None:
    assert invalid("<｜tool▁calls▁begin｜>oops").kind == "bad_json"


def test_unclosed_think_is_all_thinking() -> None:
    text = '<think>\nI will call <tool_call>{"name": "run_shell", "arguments": {"command": "ls"}}'
    reply = plain(text)
    assert reply.text == ""
    assert reply.thinking is not None and "run_shell" in reply.thinking


def test_reply_starting_after_thinking_with_close_tag_only() -> None:
    text = (
        'maybe <tool_call>{"name": "run_shell", "arguments": {"command": "rm -rf /"}}</tool_call>'
        '\n</think>\n<tool_call>{"name": "git_status", "arguments": {}}</tool_call>'
    )
    reply = parse_reply(text, None, BUILTINS)
    assert reply.action is not None and reply.action.tool == "git_status"
    assert reply.thinking is not None and "rm -rf" in reply.thinking


def test_call_only_inside_closed_think_is_a_plain_message() -> None:
    text = '<think><tool_call>{"name": "run_shell", "arguments": {}}</tool_call></think>The end.'
    reply = plain(text)
    assert reply.text == "The end."


def test_qwen3_coder_params_with_json_values() -> None:
    text = (
        "<tool_call>\n<function=edit_file>\n<parameter=path>\nsrc/a.py\n</parameter>\n"
        "<parameter=old_string>\n  x = 1\n\n</parameter>\n<parameter=new_string>\nx = 2\n"
        "</parameter>\n<parameter=replace_all>\ntrue\n</parameter>\n</function>\n</tool_call>"
    )
    action = act(text)
    assert action.args == {
        "path": "src/a.py",
        "old_string": "  x = 1\n",  # only one leading/trailing newline is stripped
        "new_string": "x = 2",
        "replace_all": True,
    }
    spawn = (
        "<tool_call><function=spawn_agents><parameter=tasks>\n"
        '[{"prompt": "a"}, {"prompt": "b", "agent": "x"}]\n</parameter>'
        "<parameter=limit>3</parameter><parameter=note>not [json</parameter></function></tool_call>"
    )
    assert act(spawn).args == {
        "tasks": [{"prompt": "a"}, {"prompt": "b", "agent": "x"}],
        "limit": 3,
        "note": "not [json",
    }


def test_qwen3_coder_cut_off_inside_a_value_is_bad_json() -> None:
    bad = invalid("<tool_call>\n<function=write_file>\n<parameter=content>\nhalf a fi")
    assert (bad.kind, bad.tool) == ("bad_json", "write_file")


def test_mistral_multiple_calls_first_wins() -> None:
    v3 = (
        '[TOOL_CALLS] [{"name": "read_file", "arguments": {"path": "a"}, "id": "abc123xyz"},'
        ' {"name": "read_file", "arguments": {"path": "b"}}]'
    )
    action = act(v3)
    assert (action.args, action.call_id) == ({"path": "a"}, "abc123xyz")
    v11 = '[TOOL_CALLS]read_file[ARGS]{"path": "a"}[TOOL_CALLS]git_status[ARGS]{}'
    assert (act(v11).tool, act(v11).args) == ("read_file", {"path": "a"})
    with_id = '[TOOL_CALLS]read_file[CALL_ID]k9Zx01abc[ARGS]{"path": "a"}'
    assert act(with_id).call_id == "k9Zx01abc"


def test_hermes_text_drops_markup_and_later_calls() -> None:
    text = (
        'Reading now.\n<tool_call>{"name": "read_file", "arguments": {"path": "a"}}</tool_call>\n'
        '<tool_call>{"name": "read_file", "arguments": {"path": "b"}}</tool_call>'
    )
    reply = parse_reply(text, None, BUILTINS)
    assert reply.action is not None and reply.action.args == {"path": "a"}
    assert reply.text == "Reading now."


def test_fenced_json_with_unknown_tool_is_a_message() -> None:
    text = 'Try this:\n```json\n{"name": "deploy_prod", "arguments": {}}\n```'
    assert plain(text).text == text


def test_bare_json_naming_no_known_tool_is_a_message() -> None:
    plain('{"name": "Alice", "age": 30}')
    plain('Result: {"tool": "hammer", "args": {"force": 3}}')


def test_prose_json_before_a_real_call_is_skipped() -> None:
    text = 'Config: {"debug": true}. Now {"name": "read_file", "arguments": {"path": "a"}}'
    reply = parse_reply(text, None, BUILTINS)
    assert reply.action is not None and reply.action.args == {"path": "a"}
    assert reply.text.startswith("Config:")


def test_echoed_tool_schema_is_not_a_call() -> None:
    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    text = json.dumps({"name": "read_file", "description": "Read", "parameters": schema})
    plain(f"The tool looks like {text}")


@pytest.mark.parametrize(
    ("content", "tool", "args"),
    [
        ('{"tool_name": "run_shell", "input": {"command": "ls"}}', "run_shell", {"command": "ls"}),
        ('{"function": "run_shell", "args": {"command": "ls"}}', "run_shell", {"command": "ls"}),
        ('{"tool": "run_shell", "command": "ls"}', "run_shell", {"command": "ls"}),
        ('{"action": "git_diff", "action_input": {}}', "git_diff", {}),
        ('{"tool_calls": [{"name": "git_diff", "arguments": {}}]}', "git_diff", {}),
        (
            '<tool_call>{"name": "Read_File", "arguments": {"path": "a"}}',
            "read_file",
            {"path": "a"},
        ),
        ('<tool_call>{"name": "functions.git_add", "arguments": "{}"}', "git_add", {}),
        ('<tool_call>json\n{"name": "git_add", "arguments": {}}</tool_call>', "git_add", {}),
        (
            '<tool_call>\n```json\n{"name": "git_add", "arguments": {}}\n```\n</tool_call>',
            "git_add",
            {},
        ),
        ('<tool_call>read_file\n{"path": "a"}\n</tool_call>', "read_file", {"path": "a"}),
        (
            '{"name": "read_file", "parameters": {"path": "a"}}<|eot_id|>',
            "read_file",
            {"path": "a"},
        ),
        ('<|python_tag|>{"name": "git_log", "parameters": {}}; {"name": "x"}', "git_log", {}),
        ("<|python_tag|>read_file.call(path='a')", "read_file", {"path": "a"}),
        ('[read_file(path="a", end_line=3)]', "read_file", {"path": "a", "end_line": 3}),
        ('<function=read_file>{"path": "a"}</function>', "read_file", {"path": "a"}),
        ("<function=git_status></function>", "git_status", {}),
        (
            "<tool_call>read_file\n<arg_key>path</arg_key><arg_value>a</arg_value></tool_call>",
            "read_file",
            {"path": "a"},
        ),
        (
            '<|tool_call|>[{"name": "read_file", "arguments": {"path": "a"}}]<|/tool_call|>',
            "read_file",
            {"path": "a"},
        ),
        (">>>all\nChecking.>>>git_status\n{}", "git_status", {}),
        ('>>>read_file\n{"path": "a"}\n>>>read_file\n{"path": "b"}', "read_file", {"path": "a"}),
    ],
)
def test_format_variants(content: str, tool: str, args: dict[str, Any]) -> None:
    action = act(content)
    assert (action.tool, action.args) == (tool, args)


def test_functionary_all_channel_is_plain_text() -> None:
    assert plain(">>>all\nNothing to do here.").text == "Nothing to do here."


def test_python_repl_prompt_is_not_a_functionary_call() -> None:
    text = "Example:\n```python\n>>> x = 1\n>>> print(x)\n```"
    assert plain(text).text == text


@pytest.mark.parametrize(
    "content",
    [
        '<tool_call>{"name": "delete_all", "arguments": {}}</tool_call>',
        "[TOOL_CALLS]delete_all[ARGS]{}",
        '<|tool_call|>[{"name": "delete_all", "arguments": {}}]',
        '<function=delete_all>{"x": 1}</function>',
        ">>>delete_all\n{}",
        '<|python_tag|>{"name": "delete_all", "parameters": {}}',
        '<｜tool▁call▁begin｜>delete_all<｜tool▁sep｜>{"x": 1}<｜tool▁call▁end｜>',
    ],
)
def test_unknown_tool_inside_any_wrapper(content: str) -> None:
    bad = invalid(content)
    assert (bad.kind, bad.tool, bad.source) == ("unknown_tool", "delete_all", "text")
    assert "delete_all" in bad.message
    assert all(name in bad.message for name in BUILTINS)


def test_unknown_tool_message_suggests_a_close_name() -> None:
    bad = invalid('<tool_call>{"name": "read_files", "arguments": {}}</tool_call>')
    assert "Did you mean 'read_file'?" in bad.message


def test_unknown_tool_with_no_tools_known() -> None:
    bad = invalid('<tool_call>{"name": "read_file", "arguments": {}}</tool_call>', tools=[])
    assert bad.kind == "unknown_tool" and "(none)" in bad.message


@pytest.mark.parametrize(
    "content",
    [
        "<tool_call>\nnot json at all\n</tool_call>",
        "<tool_call>{{{{</tool_call>",
        '<tool_call>{"arguments": {"path": "a"}}</tool_call>',
        "[TOOL_CALLS]",
        "<function=>",
    ],
)
def test_unreadable_wrapper_is_bad_json(content: str) -> None:
    bad = invalid(content)
    assert bad.kind == "bad_json" and bad.tool is None
    assert '{"name": "<tool>", "arguments": {...}}' in bad.message


def test_text_cut_off_inside_a_string_is_not_run() -> None:
    # json_repair would close the string and write half a file: refuse instead.
    text = '<tool_call>{"name": "write_file", "arguments": {"path": "a.py", "content": "def f'
    bad = invalid(text)
    assert (bad.kind, bad.tool) == ("bad_json", "write_file")
    assert "cut off" in bad.message


def test_arguments_of_the_wrong_type_are_bad_json() -> None:
    bad = invalid('<tool_call>{"name": "read_file", "arguments": 5}</tool_call>')
    assert (bad.kind, bad.tool) == ("bad_json", "read_file")


def test_markers_quoted_inside_json_strings_are_data() -> None:
    content = "Use <tool_call>, </tool_call>, [TOOL_CALLS] and >>>all\n here."
    call = json.dumps({"name": "write_file", "arguments": {"path": "a.md", "content": content}})
    for text in (call, f"<tool_call>{call}</tool_call>", f"```json\n{call}\n```"):
        assert act(text).args["content"] == content


def test_content_parts_list_is_read() -> None:
    parts = [{"type": "text", "text": '<tool_call>{"name": "git_diff", "arguments": {}}'}]
    assert act(parts).tool == "git_diff"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- native


def test_native_truncated_arguments_repaired_when_clear() -> None:
    calls = [{"id": "c1", "function": {"name": "read_file", "arguments": '{"path": "a.py", '}}]
    assert act(None, calls).args == {"path": "a.py"}


def test_native_arguments_cut_inside_a_string_are_bad_json() -> None:
    calls = [{"id": "c1", "function": {"name": "write_file", "arguments": '{"content": "abc'}}]
    bad = invalid(None, calls)
    assert (bad.kind, bad.tool, bad.call_id, bad.source) == (
        "bad_json",
        "write_file",
        "c1",
        "native",
    )


def test_native_unknown_tool_keeps_call_id() -> None:
    calls = [{"id": "c7", "type": "function", "function": {"name": "nope", "arguments": "{}"}}]
    bad = invalid(None, calls)
    assert (bad.kind, bad.tool, bad.call_id, bad.source) == ("unknown_tool", "nope", "c7", "native")


def test_native_toolcall_dataclass_and_generated_ids() -> None:
    calls = [ToolCall(id="", name="read_file", arguments='{"path": "a"}')]
    first, second = act(None, calls), act(None, calls)
    assert first.args == {"path": "a"} and first.source == "native"
    assert first.call_id.startswith("call_") and len(first.call_id) > len("call_")
    assert first.call_id != second.call_id


def test_native_first_call_wins_and_beats_text() -> None:
    text = '<tool_call>{"name": "run_shell", "arguments": {"command": "ls"}}</tool_call>'
    calls = [
        {"id": "a", "function": {"name": "git_status", "arguments": None}},
        {"id": "b", "function": {"name": "read_file", "arguments": '{"path": "x"}'}},
    ]
    reply = parse_reply(text, calls, BUILTINS)
    assert reply.action is not None
    assert (reply.action.tool, reply.action.call_id) == ("git_status", "a")
    assert reply.text == ""  # the duplicated text call is markup, not prose


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"path": "a"}', {"path": "a"}),
        ({"path": "a"}, {"path": "a"}),
        ("", {}),
        (None, {}),
        ("null", {}),
        ("  ", {}),
        ('"{\\"path\\": \\"a\\"}"', {"path": "a"}),
        ('```json\n{"path": "a"}\n```', {"path": "a"}),
        ("{'path': 'a', 'n': None, 'ok': True}", {"path": "a", "n": None, "ok": True}),
        ('{"path": "a",}', {"path": "a"}),
        ('{"content": "line1\nline2"}', {"content": "line1\nline2"}),
        ('{"path": "a"', {"path": "a"}),
        ('{"path": "src/ap', None),
        ("[1, 2]", None),
        ("path=a", None),
        (5, None),
        (["a"], None),
    ],
)
def test_parse_arguments(raw: Any, expected: dict[str, Any] | None) -> None:
    assert parse_arguments(raw) == expected


def test_parse_arguments_copies_dicts() -> None:
    raw = {"path": "a"}
    parsed = parse_arguments(raw)
    assert parsed == raw and parsed is not raw


def test_native_non_object_arguments_are_bad_json() -> None:
    bad = invalid(None, [{"id": "x", "function": {"name": "read_file", "arguments": "[1, 2]"}}])
    assert (bad.kind, bad.tool) == ("bad_json", "read_file")


def test_native_nameless_call_falls_back_to_text_then_reports() -> None:
    nameless = [{"id": "x", "function": {"arguments": "{}"}}]
    text = '<tool_call>{"name": "git_status", "arguments": {}}</tool_call>'
    assert act(text, nameless).tool == "git_status"
    bad = invalid("", nameless)
    assert (bad.kind, bad.source) == ("bad_json", "native")


@pytest.mark.parametrize("calls", [[], [None, 3, "x"], [{}], [{"type": "function"}], "junk", 7])
def test_native_junk_is_ignored(calls: Any) -> None:
    assert plain("hello", calls).text == "hello"


def test_native_flat_dict_shape() -> None:
    assert act(None, [{"name": "read_file", "arguments": {"path": "a"}}]).args == {"path": "a"}


# --------------------------------------------------------------------------- thinking


@pytest.mark.parametrize(
    ("text", "visible", "thinking"),
    [
        ("no tags", "no tags", None),
        ("<think>a</think>b", "b", "a"),
        ("<think>unclosed", "", "unclosed"),
        ("before</think>after", "after", "before"),
        ("x<think>a</think>y<think>b</think>z", "xyz", "a\nb"),
        ("<THINKING>a</THINKING>b", "b", "a"),
        ("<think>a</think>b</think>c", "bc", "a"),
        ("<think></think>b", "b", None),
        ("I think so.", "I think so.", None),
    ],
)
def test_strip_thinking(text: str, visible: str, thinking: str | None) -> None:
    assert strip_thinking(text) == (visible, thinking)


# --------------------------------------------------------------------------- fuzzing

# fmt: off
FRAGMENTS = [
    "<tool_call>", "</tool_call>", "{", "}", "[", "]", '"name"', '"arguments"', ": ", ", ",
    '"read_file"', '"x"', "[TOOL_CALLS]", "[ARGS]", "<think>", "</think>", ">>>", "read_file",
    "\n", "<function=", "<parameter=path>", "</parameter>", ">", "<|python_tag|>",
    "<|tool_call|>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "```json", "```", "'", "\\", "None",
    "<arg_key>", "(", ")",
]
# fmt: on
fragment_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=40
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
call_keys = st.sampled_from(["id", "type", "function", "name", "arguments", "parameters"])
call_dicts = st.dictionaries(
    call_keys,
    json_values
    | fragment_text
    | st.fixed_dictionaries(
        {}, optional={"name": json_values, "arguments": json_values | fragment_text}
    ),
    max_size=4,
)
tool_call_objects = st.builds(
    ToolCall,
    id=st.one_of(st.none(), st.text(max_size=5)),
    name=st.one_of(st.none(), st.sampled_from(BUILTINS), st.text(max_size=8)),
    arguments=st.one_of(st.none(), json_values, fragment_text),
)
tool_call_lists = st.one_of(
    st.none(),
    st.lists(st.one_of(call_dicts, tool_call_objects, json_values), max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.none(), fragment_text), calls=tool_call_lists)
def test_never_raises(content: str | None, calls: Any) -> None:
    # The private core, not parse_reply: its safety net would hide the bugs looked for here.
    reply = actions._parse(content, calls, BUILTINS)
    assert isinstance(reply, ParsedReply)
    assert isinstance(reply.text, str)
    assert reply.action is None or reply.invalid is None
    if reply.action is not None:
        assert reply.action.tool in BUILTINS
        assert isinstance(reply.action.args, dict)
        assert reply.action.call_id


def test_safety_net_turns_a_parser_bug_into_a_plain_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> ParsedReply:
        raise RuntimeError("bug")

    monkeypatch.setattr(actions, "_parse", broken)
    reply = plain('<tool_call>{"name": "git_status"}</tool_call>')
    assert reply.text == '<tool_call>{"name": "git_status"}</tool_call>'
    assert "action parser failed" in caplog.text


@settings(max_examples=150, deadline=None)
@given(inner=fragment_text.filter(lambda s: "think" not in s.lower()))
def test_nothing_after_an_unclosed_think_runs(inner: str) -> None:
    call = '<tool_call>{"name": "run_shell", "arguments": {"command": "ls"}}</tool_call>'
    reply = parse_reply(f"<think>{inner}{call}", None, BUILTINS)
    assert reply.action is None and reply.invalid is None


# Values may quote any markup (a model writing docs about tool calls), except thinking tags.
value_text = (
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=6)
    .map("".join)
    .filter(lambda s: "think" not in s.lower())
)
WRAPS = [
    "<tool_call>\n{call}\n</tool_call>",
    "<tool_call>{call}",
    "[TOOL_CALLS] [{call}]",
    "<|tool_call|>[{call}]",
    "<|python_tag|>{call}<|eom_id|>",
    "Sure.\n```json\n{call}\n```",
    "{call}",
    "[TOOL_CALLS]write_file[ARGS]{args}",
    "<function=write_file>{args}</function>",
    ">>>write_file\n{args}",
    "<｜tool▁call▁begin｜>write_file<｜tool▁sep｜>{args}<｜tool▁call▁end｜>",
    "native",
]


@settings(max_examples=200, deadline=None)
@given(
    args=st.dictionaries(st.text(min_size=1, max_size=8), value_text | st.integers(), max_size=4),
    wrap=st.sampled_from(WRAPS),
)
def test_round_trip_through_every_wrapper(args: dict[str, Any], wrap: str) -> None:
    args_json = json.dumps(args, ensure_ascii=False)
    if wrap == "native":
        action = act(
            None, [{"id": "c", "function": {"name": "write_file", "arguments": args_json}}]
        )
    else:
        call = json.dumps({"name": "write_file", "arguments": args}, ensure_ascii=False)
        action = act(wrap.replace("{call}", call).replace("{args}", args_json))
    assert (action.tool, action.args) == ("write_file", args)
