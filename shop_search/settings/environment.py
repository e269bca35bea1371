"""The one reader of the environment for settings: django-environ's, with errors that name
the variable, and parsing kept as the settings always had it."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured


class Env(environ.Env):
    """`environ.Env`, different in four ways.

    - A malformed value raises ImproperlyConfigured naming the variable and the value
      (django-environ's is a bare ValueError: "invalid literal for int()").
    - Values are literal: a value starting with "$" is not a reference to another variable
      (a generated DJANGO_SECRET_KEY may start with "$").
    - Booleans are true for 1, true, yes or on (any case, spaces ignored), false otherwise.
    - Floats are parsed by float(): django-environ drops unexpected characters, so "0.5x"
      would read as 0.5 and "1e-3" would fail.
    """

    BOOLEAN_TRUE_STRINGS = ("1", "true", "yes", "on")
    EXPECTED = {int: "an integer", float: "a number"}

    def __init__(self) -> None:
        super().__init__()  # no schemes: every read says its type and default where it is

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            value = self.ENVIRON[var]
        except KeyError:
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable") from None
            if not parse_default or default is None:
                return default
            value = default
        try:
            return self.parse_value(value, cast)
        except ValueError as error:
            expected = self.EXPECTED.get(cast, "valid")
            raise ImproperlyConfigured(f"{var} must be {expected}, got {value!r}") from error

    @classmethod
    def parse_value(cls, value, cast):
        if cast is bool:
            return value.strip().lower() in cls.BOOLEAN_TRUE_STRINGS
        if cast is float:
            return float(value)
        return super().parse_value(value, cast)

    def path(self, var, default=environ.Env.NOTSET) -> Path:  # type: ignore[override]
        """A pathlib.Path (environ.Path has no `/`, which settings and code use)."""
        return Path(self.get_value(var, cast=str, default=default))
