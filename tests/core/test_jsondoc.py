"""The strict reader: every malformed input gets its own clear error; valid text keeps its spans."""

import codecs
import json

import pytest

from nvdocker_setup.core.jsondoc import MAX_DEPTH, JsonDocument
from nvdocker_setup.errors import ConfigReadError

# (input bytes, error reference, a fragment of the message)
MALFORMED = [
    (b'{"a": 1,}', "daemon-json-syntax", "trailing comma before '}'"),
    (b'{"a": [1, 2,]}', "daemon-json-syntax", "trailing comma before ']'"),
    (b'{"a": 1} {"b": 2}', "daemon-json-syntax", "unexpected data after the end"),
    (b'{"a": 1}{"b": 2}', "daemon-json-syntax", "unexpected data after the end"),
    (b'{"a": NaN}', "daemon-json-syntax", "NaN is not valid JSON"),
    (b'{"a": Infinity}', "daemon-json-syntax", "Infinity is not valid JSON"),
    (b'{"a": -Infinity}', "daemon-json-syntax", "-Infinity is not valid JSON"),
    (b'{\n  // the runtime\n  "a": 1\n}', "daemon-json-syntax", "daemon.json does not allow comments"),
    (b'{\n  "a": 1 /* x */\n}', "daemon-json-syntax", "daemon.json does not allow comments"),
    (b'{"a": 1}\n# trailing\n', "daemon-json-syntax", "daemon.json does not allow comments"),
    (b'{"a": 1, "a": 2}', "daemon-json-syntax", "duplicate key 'a'"),
    (b'{"runtimes": {"x": {"path": "/a", "path": "/b"}}}', "daemon-json-syntax", "duplicate key 'path'"),
    (b"{'a': 1}", "daemon-json-syntax", "double-quoted key"),
    (b'{"a": \'x\'}', "daemon-json-syntax", "double quotes"),
    (b'{"a" 1}', "daemon-json-syntax", "expected ':'"),
    (b'{"a": 1 "b": 2}', "daemon-json-syntax", "missing ','"),
    (b'{"a": 1', "daemon-json-syntax", "expected ',' or '}'"),
    (b'{"a": "unterminated}', "daemon-json-syntax", "unterminated string"),
    (b'{"a": "tab\there"}', "daemon-json-syntax", "control character U+0009"),
    (b'{"a": "\\x41"}', "daemon-json-syntax", "invalid escape"),
    (b'{"a": tru}', "daemon-json-syntax", "expected a value"),
    (b"[1, 2]", "daemon-json-not-object", "top level must be a JSON object, found an array"),
    (b'"text"', "daemon-json-not-object", "found a string"),
    (b"null", "daemon-json-not-object", "found null"),
    (b'{"a": "\xff"}', "daemon-json-encoding", "invalid UTF-8 at line 1, column 8 (byte offset 7)"),
    (b'{"a":\n "\xc3"}', "daemon-json-encoding", "invalid UTF-8 at line 2"),
    (codecs.BOM_UTF16_LE + b'{\x00"\x00a', "daemon-json-encoding", "invalid UTF-16-LE"),
    (codecs.BOM_UTF16_LE + b"\x00\xd8{\x00}\x00", "daemon-json-encoding", "invalid UTF-16-LE"),
    (b'{"a": 1}\x00', "daemon-json-nul-byte", "NUL byte at line 1, column 9"),
    ('{"a": 1}'.encode("utf-16-le"), "daemon-json-nul-byte", "NUL byte"),
    (b"[" * (MAX_DEPTH + 5), "daemon-json-syntax", "nesting deeper than"),
    (b'{"a":' * (MAX_DEPTH + 5), "daemon-json-syntax", "nesting deeper than"),
]


@pytest.mark.parametrize("data, reference, fragment", MALFORMED)
def test_malformed_input_has_a_clear_error(data, reference, fragment):
    with pytest.raises(ConfigReadError) as caught:
        JsonDocument.parse(data, "/etc/docker/daemon.json")
    assert caught.value.reference == reference
    assert fragment in caught.value.message
    assert caught.value.message.startswith("/etc/docker/daemon.json")


def test_syntax_error_names_line_column_and_shows_the_line():
    data = b'{\n  "log-level": "info",\n  "debug": true,,\n}\n'
    with pytest.raises(ConfigReadError) as caught:
        JsonDocument.parse(data)
    error = caught.value
    assert "line 3, column 17" in error.message
    assert error.details[0] == 'line 3:   "debug": true,,'
    assert error.details[1].index("^") == len("line 3: ") + 16


def test_utf16_without_bom_gets_a_hint():
    with pytest.raises(ConfigReadError) as caught:
        JsonDocument.parse('{"a": 1}'.encode("utf-16-le"))
    assert "UTF-16 without a byte-order mark" in caught.value.hint


@pytest.mark.parametrize("data", [b"", b"   ", b"\n\n", b"\t \r\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b" \n"])
def test_empty_or_whitespace_file_is_an_empty_object(data):
    document = JsonDocument.parse(data)
    assert document.is_empty
    assert document.value == {}


@pytest.mark.parametrize(
    "encoding, bom",
    [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)],
)
def test_encodings_round_trip_with_their_bom(encoding, bom):
    data = bom + '{\n  "labels": ["zone=été"]\n}\n'.encode(encoding)
    document = JsonDocument.parse(data)
    assert document.value == {"labels": ["zone=été"]}
    assert document.encode() == data
    edited = document.with_member([], "debug", True)
    assert edited.encode().startswith(bom)
    assert JsonDocument.parse(edited.encode()).value == {"labels": ["zone=été"], "debug": True}


def test_values_match_the_standard_library():
    text = '{"a": [1, -2.5e3, 0, true, false, null], "b": {"c": "\\u00e9\\n\\ud83d\\ude00\\"", "d": {}}, "e": []}'
    assert JsonDocument.parse(text.encode()).value == json.loads(text)


def test_big_and_precise_numbers_are_kept_verbatim():
    data = b'{"mtu": 12345678901234567890123, "x": 1.10000000000000000001}\n'
    document = JsonDocument.parse(data).with_member([], "debug", False)
    assert b"12345678901234567890123" in document.encode()
    assert b"1.10000000000000000001" in document.encode()


@pytest.mark.parametrize(
    "original, expected",
    [
        ('{\n    "a": 1\n}\n', '{\n    "a": 1,\n    "debug": true\n}\n'),
        ('{\n\t"a": 1\n}', '{\n\t"a": 1,\n\t"debug": true\n}'),
        ('{"a":1}', '{"a":1,"debug":true}'),
        ('{"a": 1, "b": 2}', '{"a": 1, "b": 2, "debug": true}'),
        ("{}", '{\n  "debug": true\n}'),
        ('{\r\n  "a": 1\r\n}\r\n', '{\r\n  "a": 1,\r\n  "debug": true\r\n}\r\n'),
    ],
)
def test_insertion_follows_the_file_style(original, expected):
    assert JsonDocument.parse(original.encode()).with_member([], "debug", True).text == expected


def test_nested_insertion_uses_the_indentation_of_its_depth():
    original = '{\n    "runtimes": {\n        "kata": {\n            "path": "/k"\n        }\n    }\n}\n'
    edited = JsonDocument.parse(original.encode()).with_member(["runtimes"], "nvidia", {"path": "/n", "runtimeArgs": ["-x"]})
    assert edited.text == (
        '{\n    "runtimes": {\n        "kata": {\n            "path": "/k"\n        },\n'
        '        "nvidia": {\n            "path": "/n",\n            "runtimeArgs": [\n                "-x"\n'
        "            ]\n        }\n    }\n}\n"
    )


def test_missing_parents_are_created():
    edited = JsonDocument.parse(b'{"a": 1}').with_member(["features"], "cdi", True)
    assert edited.value == {"a": 1, "features": {"cdi": True}}


def test_non_ascii_is_never_escaped():
    edited = JsonDocument.parse(b"{}").with_member([], "labels", ["owner=Zoë"])
    assert "Zoë" in edited.text


@pytest.mark.parametrize(
    "original",
    ['{\n  "a": 1,\n  "b": 2\n}\n', '{"a":1,"b":2}', '{ "a" : 1 , "b" : 2 }', '{\n  "b": 2\n}'],
)
def test_removal_is_the_inverse_of_insertion_at_the_end(original):
    document = JsonDocument.parse(original.encode())
    assert document.with_member([], "x", {"y": [1]}).without_member([], "x").text == original


def test_removing_the_first_member_keeps_the_rest():
    document = JsonDocument.parse(b'{\n  "a": 1,\n  "b": 2\n}\n')
    assert document.without_member([], "a").text == '{\n  "b": 2\n}\n'
    assert document.without_member([], "missing").text == document.text


def test_replacing_a_value_touches_only_that_value():
    original = '{\n  "a": [1,2],\n  "default-runtime": "runc",   "z": 0\n}'
    edited = JsonDocument.parse(original.encode()).with_member([], "default-runtime", "nvidia")
    assert edited.text == original.replace('"runc"', '"nvidia"')
