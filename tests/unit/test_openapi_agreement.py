"""Where the OpenAPI document says what a field takes, the API's own check agrees with it."""

import jsonschema_rs
from twisted.trial.unittest import SynchronousTestCase

from director.manager import schedules
from director.manager.models import ValidationError
from director.manager.openapi import task_fields

# Strings where regex engines and Python's str methods disagree (NUL is not white space, so
# `\S` matches it; str.strip() takes \x1c-\x1f and \x85, JSON Schema's \s does not).
SAMPLES = [
    "echo hi",
    "\U0006e630\x00\xa1fN",  # what schemathesis sent in make test: one NUL after text
    "a\x00",
    "\x00",
    "  \x0b\t",
    "\x1c",
    "\x85",
    " ls ",
]


class TaskCommandTests(SynchronousTestCase):
    def test_the_document_and_the_check_agree(self) -> None:
        schema = task_fields(3600)["command"]
        for sample in SAMPLES:
            try:
                schedules.validate_command(sample)
                accepted = True
            except ValidationError:
                accepted = False
            self.assertEqual(jsonschema_rs.is_valid(schema, sample), accepted, repr(sample))
        self.assertFalse(jsonschema_rs.is_valid(schema, "a\x00"))
