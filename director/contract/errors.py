"""The one error every rule of the contract raises."""

from __future__ import annotations


class ValidationError(ValueError):
    """
    A value that breaks a rule: names the field and says, for a person, what is expected.

    C{message} is C{"<field>: <reason>"} (what the manager's API answers); C{reason} is the
    part after the field name; C{code} is the error code a component answers with.
    """

    def __init__(self, field_name: str, message: str, code: str = "invalid") -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message
        self.message = f"{field_name}: {message}"
        self.code = code
