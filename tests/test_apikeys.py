"""Tests for voicemesh.edge.apikeys: the API keys app backends present to an edge."""

import pytest

from voicemesh.edge.apikeys import ApiKeys

pytestmark = pytest.mark.unit

NEW, OLD = "k-new-0123456789abcdef", "k-old-0123456789abcdef"


def test_each_key_matches_its_id_and_nothing_else() -> None:
    keys = ApiKeys.from_spec(f"new:{NEW}, old:{OLD}")

    assert (keys.match(NEW), keys.match(OLD)) == ("new", "old")
    assert keys.match("") is None and keys.match(NEW[:-1]) is None and keys.match(NEW + "x") is None


def test_no_keys_is_false_and_matches_nothing() -> None:
    keys = ApiKeys.from_spec("")

    assert not keys and keys.match("") is None


@pytest.mark.parametrize("spec, message", [
    (NEW, "entry 1 must look like"), ("a b:" + NEW, "id"), (f"a:{NEW},a:{OLD}", "twice"),
    ("a:short", "at least 16"), ("a:has space in the secret", "at least 16"),
])
def test_bad_specs_name_the_entry_never_the_secret(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        ApiKeys.from_spec(spec)
    assert NEW not in str(caught.value) and "has space" not in str(caught.value)
