"""Query parameters are read against the OpenAPI document's own schemas."""

from twisted.trial.unittest import SynchronousTestCase

from director.manager.models import ValidationError
from director.manager.openapi import FLAG, QUERY_PARAMETERS, is_set
from director.manager.query_args import read_query

SITES = QUERY_PARAMETERS["get", "/api/v1/sites"]
IMAGES = QUERY_PARAMETERS["delete", "/api/v1/images"]
PUT_FILE = QUERY_PARAMETERS["put", "/api/v1/sites/{name}/files/{path}"]


class ReadQueryTests(SynchronousTestCase):
    def refused(self, args: dict[bytes, list[bytes]], params=SITES, required=frozenset()) -> str:
        with self.assertRaises(ValidationError) as caught:
            read_query(args, params, required)
        self.assertEqual(caught.exception.code, "bad_query")
        return caught.exception.field

    def test_typed_values_and_absent_ones(self) -> None:
        got = read_query({b"q": [b"club"], b"all": [b"1"], b"limit": [b"30"]}, SITES)
        self.assertEqual(got, {"q": "club", "all": "1", "limit": 30, "offset": None})

    def test_a_flag_outside_its_enum_is_refused(self) -> None:
        # What schemathesis sent in CI: ?all= with text that is none of 0, 1, true, false.
        self.assertEqual(self.refused({b"all": ["\x8aGۡ".encode()]}), "all")
        self.assertEqual(self.refused({b"all": [b"yes"]}), "all")

    def test_integers_are_ascii_digits_in_range(self) -> None:
        for bad in (b"0", b"5001", b"-1", b"1.5", "١٢".encode(), b"", b" 3", b"9" * 40):
            if bad == b"":
                continue  # an empty value is the same as absent
            self.assertEqual(self.refused({b"limit": [bad]}), "limit", bad)
        self.assertEqual(read_query({b"offset": [b"0"]}, SITES)["offset"], 0)

    def test_text_length_and_anchored_patterns(self) -> None:
        self.assertEqual(self.refused({b"q": [b"x" * 1001]}), "q")
        self.assertEqual(
            read_query({b"name": [b"director/python:3"]}, IMAGES)["name"], "director/python:3"
        )
        # An anchored pattern holds to the end: no trailing newline slips through.
        self.assertEqual(self.refused({b"name": [b"director/python:3\n"]}, IMAGES), "name")
        self.assertEqual(self.refused({b"mode": [b"999"]}, PUT_FILE), "mode")
        # Setuid, setgid and sticky bits are not a mode the document offers.
        self.assertEqual(self.refused({b"mode": [b"6410"]}, PUT_FILE), "mode")
        self.assertEqual(read_query({b"mode": [b"0755"]}, PUT_FILE)["mode"], "0755")

    def test_required_parameters_and_bad_utf8(self) -> None:
        self.assertEqual(self.refused({}, IMAGES, {"name"}), "name")
        self.assertEqual(self.refused({b"q": [b"\xff"]}), "q")

    def test_unknown_parameters_are_ignored(self) -> None:
        self.assertEqual(read_query({b"colour": [b"red"]}, [("all", FLAG)]), {"all": None})

    def test_is_set(self) -> None:
        self.assertEqual(
            [is_set(v) for v in ("1", "true", "0", "false", None)],
            [True, True, False, False, False],
        )
