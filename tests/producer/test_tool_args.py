"""The code argument decoder against json.loads and jiter's partial parse, at every split."""

from __future__ import annotations

import json
import random

import jiter
import pytest

from eager.producer.tool_args import ArgumentDecoder, RawInput, ToolArgumentsError

CODES = [
    'print("hi")\n',
    'x = "a\\tb"\nprint(x, \'\\\\\')\n',
    "s = '\u00e9\u4e2d\U0001f600'\nprint(s)\n",
    "\x00\x1f\x7f\u2028 /\b\f\r\n",
    "",
]


def arguments(code: str, rng: random.Random) -> str:
    """The arguments as a model might write them: other keys around the code, any spacing, any escaping."""
    before = rng.choice([{}, {"note": 'a "quoted" {not: code}'}, {"code_x": "y", "opts": {"code": "nested"}}])
    after = rng.choice([{}, {"timeout": 3}, {"list": ["code", {"code": 1}]}])
    body = {**before, "code": code, **after}
    return json.dumps(body, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))


def pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, len(text) // 2))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def partial_code(prefix: str) -> str:
    """jiter's reading of the prefix: the most of the code string a prefix proves."""
    try:
        value = jiter.from_json(prefix.encode(), partial_mode="trailing-strings")
    except ValueError:
        return ""
    return value.get("code", "") if isinstance(value, dict) else ""


@pytest.mark.parametrize("seed", range(200))
def test_every_split_decodes_exactly(seed: int) -> None:
    rng = random.Random(seed)
    code = CODES[seed % len(CODES)] * rng.randint(1, 3)
    text = arguments(code, rng)
    decoder, got, prefix = ArgumentDecoder("code"), "", ""
    for piece in pieces(text, rng):
        got += decoder.feed(piece)
        prefix += piece
        if "\\u" not in prefix[-12:]:  # jiter holds back a lone high surrogate; so does the decoder, one escape longer
            assert got == partial_code(prefix) or (not decoder.closed and partial_code(prefix).startswith(got))
    assert decoder.closed
    assert got == code == decoder.finish()


def test_one_character_at_a_time_with_surrogate_pairs() -> None:
    code = "print('\U0001f600\U0001f601')  # \ud7ff\ue000\n"
    decoder = ArgumentDecoder("code")
    out = [decoder.feed(ch) for ch in json.dumps({"code": code})]
    assert "".join(out) == code == decoder.finish()
    assert all("\ud83d" not in part for part in out)  # a high surrogate never goes out alone before its pair


def test_lone_surrogates_stay_as_json_loads_reads_them() -> None:
    text = '{"code": "a\\ud83dxb\\ude00\\ud83d"}'
    decoder = ArgumentDecoder("code")
    assert "".join(decoder.feed(ch) for ch in text) == json.loads(text)["code"] == decoder.finish()


def test_escaped_key_and_a_later_duplicate_is_a_clear_difference() -> None:
    decoder = ArgumentDecoder("code")
    assert decoder.feed('{"co\\u0064e": "1\\n"}') == "1\n"
    assert decoder.finish() == "1\n"
    twice = ArgumentDecoder("code")
    twice.feed('{"code": "1\\n", "code": "2\\n"}')
    with pytest.raises(ToolArgumentsError, match="differs from the code decoded while streaming"):
        twice.finish()


def test_a_value_that_never_closes_keeps_what_is_final() -> None:
    decoder = ArgumentDecoder("code")
    assert decoder.feed('{"code": "x = 1\\nprint(x)\\') == "x = 1\nprint(x)"
    assert not decoder.closed
    with pytest.raises(ToolArgumentsError, match="never closed"):
        decoder.finish()


@pytest.mark.parametrize("text, why", [
    ('{"code": 3}', "no string `code`"),
    ('["code"]', "not an object"),
    ('{"script": "print(1)"}', "no string `code`"),
    ('{"code": "x"} trailing', "not JSON"),
])
def test_malformed_arguments_are_clear_errors(text: str, why: str) -> None:
    decoder = ArgumentDecoder("code")
    decoder.feed(text)
    with pytest.raises(ToolArgumentsError, match=why):
        decoder.finish()


@pytest.mark.parametrize("escape", ["\\x41", "\\u12g4"])
def test_an_invalid_escape_stops_decoding(escape: str) -> None:
    with pytest.raises(ToolArgumentsError, match="invalid escape"):
        ArgumentDecoder("code").feed('{"code": "a' + escape + '"}')


def test_other_argument_name() -> None:
    decoder = ArgumentDecoder("source")
    assert decoder.feed('{"code": "no", "source": "yes\\n"}') == "yes\n"
    assert decoder.finish() == "yes\n"


def test_raw_input_is_the_code() -> None:
    raw = RawInput()
    assert raw.feed("print(1") + raw.feed(")\n") == "print(1)\n" == raw.finish()
